"""A thread-safe map whose entries expire and whose size is bounded: what the server keeps in memory
(iap_access.py: group answers, users' syncs, lookup memos; auth_middleware.py: hand-on decisions)
never outgrows its bound, whatever clients send."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

MAX_KEPT = 10_000
"""Entries a map keeps unless told otherwise; the oldest go first when there are more."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A thread-safe map whose entries go `seconds` after they were put (None: never), at most `size`
    of them. Every entry lives as long, so insertion order is expiry order: the oldest go first."""

    def __init__(self, seconds: float | None, size: int = MAX_KEPT) -> None:
        self.seconds, self.size = math.inf if seconds is None else seconds, size
        self._items: OrderedDict[K, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
        return item[0] if item is not None and time.monotonic() < item[1] else None

    def put(self, key: K, value: V) -> None:
        now = time.monotonic()
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (value, now + self.seconds)
            while len(self._items) > self.size or next(iter(self._items.values()))[1] <= now:
                self._items.popitem(last=False)

    def get_or(self, key: K, compute: Callable[[], V | None]) -> V | None:
        """The value kept for `key`, else `compute()`'s, kept unless None (absent now, maybe not in a moment)."""
        value = self.get(key)
        if value is None:
            value = compute()
            if value is not None:
                self.put(key, value)
        return value

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        """How many entries are held, including any that have expired since the last `put`."""
        with self._lock:
            return len(self._items)
