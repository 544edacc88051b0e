"""Teams on one server: the IAP-verified caller is MLflow's authenticated user, and MLflow's own
auth app (`mlflow server --app-name basic-auth`, workspaces on) decides what that user may do.

With MLFLOW_IAP_ACCESS set (the `[access]` table of the deployment's configuration, as JSON):
- `authenticate` is the auth app's `authorization_function`. iap_identity.py has verified IAP's
  assertion and put the e-mail in VERIFIED_USER_HEADER (after removing any copy a client sent);
  `authenticate` returns it as the user, provisioning it on first sight. Nobody has a usable
  password: users are created with a random one nobody is told, and no request is authenticated
  by password (MLflow's basic-auth path is not configured). MLflow's validators, its fail-closed
  net (MLFLOW_BASIC_AUTH_FAIL_CLOSED) and its response filters then decide, as they would for
  MLflow's own logins.
- each team has a workspace and two roles there, managed here (names start with ROLE_PREFIX):
  `iap-team` (members: create, change and delete everything in the workspace) and, with
  `others = "read"`, `iap-readers` (members of the other teams: read everything in it).
  `admins` are MLflow admins. A user's admin flag and managed roles are set to what the
  configuration says when the user is first seen (that request waits), again in the background
  once the answers they rest on are half a TTL old (group memberships change), and for every
  known user at start; anything else an admin grants by hand through MLflow's own APIs stays.
- `group:` members are resolved with the Cloud Identity Groups API (transitive membership, the
  server's own credentials). The TTL (MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS, at most 300) bounds
  how old an answer deciding a request may be; when Cloud Identity does not answer, the last
  answer is kept until 2 TTL old, then the user is not a member (CloudIdentityGroups, Provisioner).

`apply_at_start` runs in serve.py before uvicorn: workspaces created, managed roles made to match
(added, changed, removed), known users reconciled. A malformed model stops the start with one line.
"""

from __future__ import annotations

import configparser
import functools
import hashlib
import hmac
import json
import logging
import os
import queue
import re
import secrets
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

from kept import MAX_KEPT, Recent

T = TypeVar("T")

ACCESS_ENV = "MLFLOW_IAP_ACCESS"
TTL_ENV = "MLFLOW_IAP_ACCESS_GROUPS_TTL_SECONDS"
CLOUD_IDENTITY_ENV = "MLFLOW_IAP_TEST_CLOUD_IDENTITY_URL"
CLOUD_IDENTITY_URL = "https://cloudidentity.googleapis.com"
GROUPS_SCOPE = "https://www.googleapis.com/auth/cloud-identity.groups.readonly"
VERIFIED_USER_HEADER = "x-mlflow-iap-verified-user"
"""Set by iap_identity.py from the verified assertion only; a client's copy is removed first."""
BOOTSTRAP_ADMIN = "iap-bootstrap-admin"
"""The admin MLflow's auth app insists on creating. Its name has no '@', so no IAP identity is it."""
ROLE_PREFIX = "iap-"
TEAM_ROLE, READERS_ROLE = "iap-team", "iap-readers"
MAX_GROUPS_TTL = 300
MEMBER = re.compile(r"(user|group|serviceAccount):([^@\s:]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
WORKSPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
RESERVED_WORKSPACES = {"workspaces", "api", "ajax-api", "static-files"}
# What a role grants in its workspace; every type a team owns (MLflow's top-level resource types).
_OWNED_TYPES = ("experiment", "registered_model", "prompt", "scorer")
TEAM_GRANTS = frozenset({("workspace", "*", "USE"), *((t, "*", "MANAGE") for t in _OWNED_TYPES)})
READER_GRANTS = frozenset((t, "*", "READ") for t in _OWNED_TYPES)

_log = logging.getLogger("uvicorn.error")


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Team:
    name: str
    workspace: str
    members: tuple[str, ...]


@dataclass(frozen=True)
class AccessModel:
    admins: tuple[str, ...]
    teams: tuple[Team, ...]
    others: str = "none"

    @property
    def groups(self) -> list[str]:
        members = [*self.admins, *(m for t in self.teams for m in t.members)]
        return sorted({m.split(":", 1)[1] for m in members if m.startswith("group:")})


def _members(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ValueError(f"{ACCESS_ENV}: {where} must be a list of user:/group:/serviceAccount: members")
    for member in value:
        if not MEMBER.fullmatch(member):
            raise ValueError(
                f"{ACCESS_ENV}: {where} has {member!r}; write user:EMAIL, group:EMAIL or serviceAccount:EMAIL"
            )
    return tuple(m.split(":", 1)[0] + ":" + m.split(":", 1)[1].lower() for m in value)


def parse(text: str) -> AccessModel:
    """The access model from its JSON text; ValueError, one line naming the field, if it is not one."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{ACCESS_ENV} is not JSON: {e}") from e
    if not isinstance(data, dict) or set(data) - {"admins", "teams", "others"}:
        raise ValueError(f"{ACCESS_ENV} must be an object with admins, teams and others only")
    others = data.get("others", "none")
    if others not in ("none", "read"):
        raise ValueError(f"{ACCESS_ENV}: others must be none or read, got {others!r}")
    teams_data = data.get("teams", [])
    if not isinstance(teams_data, list) or not all(isinstance(t, dict) for t in teams_data):
        raise ValueError(f"{ACCESS_ENV}: teams must be a list of objects")
    teams, workspaces = [], set()
    for i, t in enumerate(teams_data):
        name, workspace = t.get("name"), t.get("workspace")
        for key, value in (("name", name), ("workspace", workspace)):
            if (
                not isinstance(value, str)
                or not WORKSPACE.fullmatch(value)
                or not 2 <= len(value) <= 63
                or value in RESERVED_WORKSPACES
            ):
                raise ValueError(
                    f"{ACCESS_ENV}: teams[{i}].{key} must be 2-63 lower-case letters, digits and inner hyphens "
                    f"(not {sorted(RESERVED_WORKSPACES)}), got {value!r}"
                )
        if workspace in workspaces:
            raise ValueError(f"{ACCESS_ENV}: teams[{i}].workspace {workspace!r} belongs to another team already")
        workspaces.add(workspace)
        teams.append(Team(name, workspace, _members(t.get("members"), f"teams[{i}].members")))
    return AccessModel(_members(data.get("admins", []), "admins"), tuple(teams), others)


def model_from_environ(environ: Mapping[str, str] = os.environ) -> AccessModel | None:
    """None: no [access], everyone IAP admits may do everything (the auth app is not loaded)."""
    text = environ.get(ACCESS_ENV, "")
    if not text:
        return None
    if environ.get("MLFLOW_IAP_VERIFICATION", "on") != "on":
        raise ValueError(f"{ACCESS_ENV} needs MLFLOW_IAP_VERIFICATION=on: the user is the IAP-verified e-mail")
    groups_ttl(environ)
    return parse(text)


def groups_ttl(environ: Mapping[str, str] = os.environ) -> int:
    text = environ.get(TTL_ENV, str(MAX_GROUPS_TTL))
    if not text.isdigit() or not 1 <= int(text) <= MAX_GROUPS_TTL:
        raise ValueError(f"{TTL_ENV} must be a whole number of seconds from 1 to {MAX_GROUPS_TTL}, got {text!r}")
    return int(text)


# --- groups ------------------------------------------------------------------------------------

LOOKUP_TIMEOUT = 3.0
"""Seconds one Cloud Identity call may take while a request waits for it (a user's first request, or
one whose answers are past every bound below): a stalled API costs that request this, not minutes."""
REFRESH_TIMEOUT = 10.0
"""Seconds one call may take in a background refresh, which no request waits for."""
REFRESH_AT = 0.5
"""A user's group answers are refreshed in the background, by the first request that finds them
older than this fraction of the TTL; the refresh has the other half to answer."""
REFRESH_WORKERS = 4
"""Background refreshes run at most this many at a time per process, one per user at most."""
NAME_SECONDS = 3600.0
"""How long a group's resource name (`groups/ID`, fixed for the group's life) is kept."""


class GroupUnreadable(Exception):
    """Cloud Identity gave no usable answer about a group; `status` is its HTTP status, if it sent one."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status

    @property
    def is_answer(self) -> bool:
        """403 (the server's account may not read the group: the admin step is missing or was undone)
        and 404 (no such group) say the same on every call: configuration, not an outage."""
        return self.status in (403, 404)


@dataclass(frozen=True)
class Answer:
    """Whether a user is in a group, and how long that may decide requests (monotonic times)."""

    found: bool
    refresh_after: float
    """From then on, look again in the background."""
    expires: float
    """From then on, a request waits for a fresh answer..."""
    kept_until: float
    """...unless a refresh is already asking, until then: a slow API is treated as a failing one."""


class CloudIdentityGroups:
    """Transitive group membership from the Cloud Identity Groups API, as the server's own account.

    An answer is kept `ttl` seconds from when it was asked for. When Cloud Identity does not answer
    (5xx, 401, 429, a timeout, a refused connection, no JSON) the last answer about that user is kept
    until it is 2 x `ttl` old, then the user is not a member (fail closed); a user without a kept
    answer is not a member at once. One line is logged per group when it stops answering and one
    when it answers again, and a failing group is asked at most once per `retry` seconds (for all
    users together). 403 and 404 are answers, not failures: not a member, logged once per group.
    """

    def __init__(self, ttl: int, base_url: str = CLOUD_IDENTITY_URL, size: int = MAX_KEPT) -> None:
        self.ttl, self.base_url = ttl, base_url.rstrip("/")
        self.retry = min(10.0, ttl / 3)
        self._names: Recent[str, str] = Recent(NAME_SECONDS, size)
        """group e-mail -> resource name (a name that answers 404 is looked up again at once)."""
        self._answers: Recent[tuple[str, str], tuple[bool, float]] = Recent(2 * ttl, size)
        """(group, user) -> (member?, when it was asked)."""
        self._trouble: dict[str, tuple[str, float | None]] = {}
        """group -> (the problem logged, when a failing group may be asked again; None for a 403/404,
        which is an answer); only configured groups get here."""
        self._lock = threading.Lock()
        self._credentials: Any = None

    def _token(self) -> str:
        import google.auth
        import google.auth.transport.requests

        with self._lock:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[GROUPS_SCOPE])
            if not self._credentials.valid:
                self._credentials.refresh(google.auth.transport.requests.Request())
            return str(self._credentials.token)

    def _get(self, path: str, query: dict[str, str], timeout: float) -> dict[str, Any]:
        url = f"{self.base_url}/v1/{path}?{urllib.parse.urlencode(query)}"
        try:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self._token()}"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise GroupUnreadable(f"{e.code} {e.reason}", e.code) from e
        except Exception as e:  # a timeout, a refused connection, no token, no JSON: no answer
            raise GroupUnreadable(str(e) or type(e).__name__) from e
        if not isinstance(answer, dict):
            raise GroupUnreadable("not a JSON object")
        return answer

    def resource_name(self, group: str, timeout: float = LOOKUP_TIMEOUT) -> str:
        name = self._names.get(group)
        if name is None:
            name = self._get("groups:lookup", {"groupKey.id": group}, timeout).get("name")
            if not isinstance(name, str):
                raise GroupUnreadable("no such group", 404)
            self._names.put(group, name)
        return name

    def _check(self, group: str, email: str, timeout: float) -> bool:
        query = {"query": f"member_key_id == '{email}'"}
        named = self._names.get(group) is not None
        try:
            path = f"{self.resource_name(group, timeout)}/memberships:checkTransitiveMembership"
            return bool(self._get(path, query, timeout).get("hasMembership"))
        except GroupUnreadable as e:
            if e.status != 404 or not named:
                raise
            self._names.pop(group)  # deleted, or re-created under another name: look it up again
            return self._check(group, email, timeout)

    def has_member(
        self, group: str, email: str, timeout: float = LOOKUP_TIMEOUT, max_age: float | None = None
    ) -> Answer:
        """Whether `email` is in `group`, directly or not: from an answer younger than `max_age`
        (default the TTL), else from Cloud Identity, else as the class says when it does not answer."""
        asked = time.monotonic()
        kept = self._answers.get((group, email))
        if kept is not None and asked - kept[1] >= 2 * self.ttl:
            kept = None  # too old to be served, even while Cloud Identity does not answer
        if kept is not None and asked - kept[1] < (self.ttl if max_age is None else max_age):
            return self._fresh(*kept)
        if self._may_ask(group, asked, timeout):
            try:
                found = self._check(group, email, timeout)
            except GroupUnreadable as e:
                if not e.is_answer:
                    self._say(group, f"cannot read group {group} ({e}); {self._failing_means}", asked + self.retry)
                    return self._unanswered(kept, asked)
                means = self._denied_means if e.status == 403 else "no group has that address: check [access]"
                self._say(group, f"cannot read group {group} ({e}); {means}", None)
                found = False
            else:
                self._say(group, None, None)
            self._answers.put((group, email), (found, asked))
            return self._fresh(found, asked)
        return self._unanswered(kept, asked)

    @property
    def answers_kept(self) -> int:
        return len(self._answers)

    def _fresh(self, found: bool, asked: float) -> Answer:
        return Answer(found, asked + self.ttl * REFRESH_AT, asked + self.ttl, asked + 2 * self.ttl)

    def _unanswered(self, kept: tuple[bool, float] | None, now: float) -> Answer:
        if kept is None:  # fail closed; look again soon
            return Answer(False, now + self.retry, now + self.ttl, now + self.ttl)
        found, asked = kept
        return Answer(found, now + self.retry, asked + 2 * self.ttl, asked + 2 * self.ttl)

    @property
    def _failing_means(self) -> str:
        return (
            f"its members keep what they had for at most {self.ttl} s more, users it has not answered "
            "about get nothing from it until it answers"
        )

    _denied_means = (
        "its members get nothing from it until the server's service account may read its memberships "
        "(docs/security.md: Teams and permissions)"
    )

    def _may_ask(self, group: str, now: float, timeout: float) -> bool:
        """A group that failed is asked again once per `retry` seconds, by one caller at a time."""
        with self._lock:
            trouble = self._trouble.get(group)
            if trouble is None or trouble[1] is None:
                return True
            if now < trouble[1]:
                return False
            self._trouble[group] = (trouble[0], now + self.retry + timeout)  # this caller probes; others wait
            return True

    def _say(self, group: str, problem: str | None, ask_again: float | None) -> None:
        """One log line when a group's problem starts or changes, one when it ends."""
        with self._lock:
            before = self._trouble.pop(group, None)
            if problem is not None:
                self._trouble[group] = (problem, ask_again)
        if problem is not None and (before is None or before[0] != problem):
            _log.warning("iap_access: %s", problem)
        elif problem is None and before is not None:
            _log.warning("iap_access: group %s answers again", group)


# --- what a user gets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grants:
    is_admin: bool
    roles: frozenset[tuple[str, str]]
    """(workspace, role name) of the managed roles the user holds."""
    refresh_after: float
    expires: float
    kept_until: float
    """The earliest of the group answers' times these grants rest on (see Answer); without group
    answers, a TTL (and half) from now: the model's user: members are re-applied that often."""


class Resolver:
    def __init__(self, model: AccessModel, groups: CloudIdentityGroups) -> None:
        self.model, self.groups = model, groups

    def _is(
        self, members: tuple[str, ...], email: str, answers: list[Answer], timeout: float, max_age: float | None
    ) -> bool:
        if any(m.split(":", 1)[1] == email for m in members if not m.startswith("group:")):
            return True
        for member in members:
            kind, who = member.split(":", 1)
            if kind == "group":
                answers.append(answer := self.groups.has_member(who, email, timeout, max_age))
                if answer.found:
                    return True
        return False

    def grants(self, email: str, timeout: float = LOOKUP_TIMEOUT, max_age: float | None = None) -> Grants:
        """What the model gives `email`, group members asked about with `timeout` per call (answers
        younger than `max_age`, default the TTL, are not asked again)."""
        email, now, ttl = email.lower(), time.monotonic(), self.groups.ttl
        answers = [Answer(False, now + ttl * REFRESH_AT, now + ttl, now + 2 * ttl)]
        own = [t for t in self.model.teams if self._is(t.members, email, answers, timeout, max_age)]
        roles = {(t.workspace, TEAM_ROLE) for t in own}
        if own and self.model.others == "read":
            roles |= {(t.workspace, READERS_ROLE) for t in self.model.teams if t not in own}
        is_admin = self._is(self.model.admins, email, answers, timeout, max_age)
        return Grants(
            is_admin,
            frozenset(roles),
            min(a.refresh_after for a in answers),
            min(a.expires for a in answers),
            min(a.kept_until for a in answers),
        )


# --- MLflow's auth store -----------------------------------------------------------------------


def _store() -> Any:
    from mlflow.server.auth import store

    return store


def _role_ids() -> dict[tuple[str, str], int]:
    return {(r.workspace, r.name): r.id for r in _store().list_roles() if r.name.startswith(ROLE_PREFIX)}


def _sync_user(email: str, wanted: Grants, role_ids: dict[tuple[str, str], int]) -> None:
    """The user's admin flag and managed roles made to match `wanted`; other roles are left alone."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    store = _store()
    if not store.has_user(email, use_primary=True):
        try:
            store.create_user(email, secrets.token_urlsafe(48), is_admin=wanted.is_admin)
        except MlflowException as e:
            if not isinstance(e.__cause__, sqlalchemy.exc.IntegrityError):
                raise  # another instance or request created it meanwhile
    user = store.get_user(email)
    if user.is_admin != wanted.is_admin:
        store.update_user(email, is_admin=wanted.is_admin)
    held = {(r.workspace, r.name): r.id for r in store.list_user_roles(user.id) if r.name.startswith(ROLE_PREFIX)}
    for key in held.keys() - wanted.roles:
        store.unassign_role_from_user(user.id, held[key])
    for key in wanted.roles - held.keys():
        if key in role_ids:
            try:
                store.assign_role_to_user(user.id, role_ids[key])
            except MlflowException:
                pass  # assigned meanwhile by another request or instance


@dataclass
class _Synced:
    grants: Grants
    refreshing: bool = False


class Provisioner:
    """Per process: keeps each user's MLflow record (admin flag, managed roles) matching the model.

    - A user first seen (or whose answers are past every bound) waits for the lookup, with
      LOOKUP_TIMEOUT per call; concurrent requests of that user wait for that one lookup, and
      nobody else does: there is no lock across users.
    - A known user is served at once. Once its answers are REFRESH_AT of the TTL old, its first
      request hands a refresh to a background worker; until it lands, the current grants serve,
      up to their `expires` (a TTL after the oldest answer was asked for), or, while that refresh
      is still asking (a slow or failing API), up to `kept_until` (2 TTL).
    """

    def __init__(self, resolver: Resolver, size: int = MAX_KEPT) -> None:
        self.resolver = resolver
        self._users: Recent[str, _Synced] = Recent(2 * resolver.groups.ttl, size)
        self._lookups: dict[str, threading.Event] = {}
        """The users whose first lookup is under way, each with what its other requests wait on."""
        self._lock = threading.Lock()
        self._role_ids: dict[tuple[str, str], int] | None = None
        self._refresh_queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []

    def ensure(self, email: str) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                synced = self._users.get(email)
                if synced is not None and (
                    now < synced.grants.expires or (synced.refreshing and now < synced.grants.kept_until)
                ):
                    if now >= synced.grants.refresh_after and not synced.refreshing:
                        synced.refreshing = True
                        self._refresh_later(email)
                    return
                lookup = self._lookups.get(email)
                if lookup is None:
                    lookup = self._lookups[email] = threading.Event()
                    break
            lookup.wait()  # another request of this user is looking it up; then see what it found
        try:
            self._sync(email, LOOKUP_TIMEOUT, None)
        finally:
            with self._lock:
                del self._lookups[email]
            lookup.set()

    def _sync(self, email: str, timeout: float, max_age: float | None) -> None:
        grants = self.resolver.grants(email, timeout, max_age)
        if self._role_ids is None:
            self._role_ids = _role_ids()
        _sync_user(email, grants, self._role_ids)
        with self._lock:
            self._users.put(email, _Synced(grants))

    def _refresh_later(self, email: str) -> None:
        """Called with the lock held: queues the refresh, starting a worker while there are fewer
        than REFRESH_WORKERS (daemons: a lookup in flight never holds up the server's exit)."""
        self._refresh_queue.put(email)
        if len(self._workers) < REFRESH_WORKERS:
            worker = threading.Thread(target=self._refresh_forever, name="iap-groups-refresh", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _refresh_forever(self) -> None:
        while True:
            email = self._refresh_queue.get()
            try:
                self._sync(email, REFRESH_TIMEOUT, self.resolver.groups.ttl * REFRESH_AT)
            except Exception:  # the database, most likely: the next request after `expires` syncs in front
                _log.exception("iap_access: refreshing %s failed", email)
                with self._lock:
                    if (synced := self._users.get(email)) is not None:
                        synced.refreshing = False


_provisioner: Provisioner | None = None


def provisioner() -> Provisioner:
    global _provisioner
    if _provisioner is None:
        model = model_from_environ()
        if model is None:
            raise RuntimeError(f"{ACCESS_ENV} is not set but the IAP access authorization function is configured")
        groups = CloudIdentityGroups(groups_ttl(), os.environ.get(CLOUD_IDENTITY_ENV) or CLOUD_IDENTITY_URL)
        _provisioner = Provisioner(Resolver(model, groups))
    return _provisioner


def authenticate() -> Any:
    """MLflow's `authorization_function`: the user is the e-mail IAP's verified assertion names."""
    from flask import Response, request
    from werkzeug.datastructures import Authorization

    email = request.headers.get(VERIFIED_USER_HEADER, "")
    if "@" not in email:
        body = json.dumps({"error_code": "UNAUTHENTICATED", "message": "no IAP-verified user"})
        return Response(body, status=401, mimetype="application/json")
    email = email.lower()
    provisioner().ensure(email)
    return Authorization("basic", {"username": email, "password": ""})


# --- what MLflow's validators look up, kept briefly ---------------------------------------------

LOOKUP_CACHE_SECONDS = 5.0
"""How long a user record, a user's grants in a workspace and a workspace are kept per process.
MLflow's validators read them from the database on every request (twice for the user). Any write
to the auth or workspace store in a process empties that process's memos, so a grant, revocation
or admin flag changed through MLflow's own APIs (or by iap_access) holds at once in the process
that made it, and within this time in the server's other workers and instances."""
STORE_WRITES = re.compile(r"(create|update|delete|assign|unassign|add|remove|set|rename|grant|revoke)_")
RUN_CACHE_SIZE = 10_000


_users: Recent[Hashable, Any] = Recent(LOOKUP_CACHE_SECONDS)
_grants: Recent[Hashable, Any] = Recent(LOOKUP_CACHE_SECONDS)
_workspaces: Recent[Hashable, Any] = Recent(LOOKUP_CACHE_SECONDS)
_run_experiments: Recent[Hashable, Any] = Recent(None, RUN_CACHE_SIZE)
"""(request workspace, run id) -> the run's experiment id, which never changes."""


def _forgetting(write: Callable[..., T], *memos: Recent[Any, Any]) -> Callable[..., T]:
    @functools.wraps(write)
    def forgetting(*args: Any, **kwargs: Any) -> T:
        try:
            return write(*args, **kwargs)
        finally:
            for memo in memos:
                memo.clear()

    return forgetting


def _forget_on_writes(target: Any, *memos: Recent[Any, Any]) -> None:
    """Every write method of `target` (an instance or a class) empties `memos` once it is done."""
    for name in dir(target):
        if STORE_WRITES.match(name) and callable(getattr(target, name)):
            setattr(target, name, _forgetting(getattr(target, name), *memos))


def install_lookup_caches() -> None:
    """MLflow's auth store, its run lookup and the workspace store, answered from the memos above."""
    import mlflow.server.auth as auth
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore as WorkspaceStore
    from mlflow.utils import workspace_context

    store: Any = auth.store
    _forget_on_writes(store, _users, _grants)
    _forget_on_writes(WorkspaceStore, _workspaces)
    get_user, list_grants = store.get_user, store.list_grants
    store.get_user = lambda username: _users.get_or(username, lambda: get_user(username))
    store.list_grants = lambda user_id, workspace_name, resource_types: _grants.get_or(
        (user_id, workspace_name, frozenset(resource_types)),
        lambda: list_grants(user_id, workspace_name, resource_types),
    )
    fetch_or_none = auth._fetch_or_none

    def _fetch(fetch: Any, resource_id: str) -> Any:
        # Validators fetch a whole run (6 queries) only for its experiment id.
        if getattr(fetch, "__func__", None) is not TrackingStore.get_run:
            return fetch_or_none(fetch, resource_id)

        def light_run() -> SimpleNamespace | None:
            run = fetch_or_none(fetch, resource_id)
            return None if run is None else SimpleNamespace(info=SimpleNamespace(experiment_id=run.info.experiment_id))

        return _run_experiments.get_or((workspace_context.get_request_workspace(), resource_id), light_run)

    auth._fetch_or_none = _fetch
    get_workspace = WorkspaceStore.get_workspace
    setattr(  # noqa: B010  (a method replaced on MLflow's class, as a plain attribute)
        WorkspaceStore,
        "get_workspace",
        lambda self, workspace_name: _workspaces.get_or(workspace_name, lambda: get_workspace(self, workspace_name)),
    )


# --- at start ----------------------------------------------------------------------------------


def auth_config_file(backend_store_uri: str, directory: str | None = None) -> str:
    """The auth app's ini (its tables in the backend store's database); readable by this user only."""
    config = configparser.ConfigParser(interpolation=None)
    # MLflow reads it with interpolation: a URL-encoded password's '%' is written '%%'.
    config["mlflow"] = {
        k: v.replace("%", "%%")
        for k, v in {
            "default_permission": "NO_PERMISSIONS",
            "database_uri": backend_store_uri,
            "admin_username": BOOTSTRAP_ADMIN,
            "authorization_function": "iap_access:authenticate",
            "grant_default_workspace_access": "false",
            "workspace_cache_ttl_seconds": "3600",
        }.items()
    }
    fd, path = tempfile.mkstemp(prefix="mlflow-auth-", suffix=".ini", dir=directory)
    with os.fdopen(fd, "w") as f:
        config.write(f)
    return path


def flask_secret_key(admin_password: str) -> str:
    """The auth app's CSRF key, derived from the bootstrap admin's secret: one secret, same in every instance."""
    return hmac.new(admin_password.encode(), b"mlflow-flask-server-secret-key", hashlib.sha256).hexdigest()


def _sync_roles(model: AccessModel) -> dict[tuple[str, str], int]:
    store = _store()
    wanted: dict[tuple[str, str], frozenset[tuple[str, str, str]]] = {}
    for team in model.teams:
        wanted[(team.workspace, TEAM_ROLE)] = TEAM_GRANTS
        if model.others == "read" and len(model.teams) > 1:
            wanted[(team.workspace, READERS_ROLE)] = READER_GRANTS
    existing = {(r.workspace, r.name): r for r in store.list_roles() if r.name.startswith(ROLE_PREFIX)}
    for key in existing.keys() - wanted.keys():
        store.delete_role(existing[key].id)
        _log.info("iap_access: removed role %s in workspace %s", key[1], key[0])
    ids = {}
    for (workspace, name), grants in wanted.items():
        role = existing.get((workspace, name)) or store.create_role(
            name, workspace, "managed by the [access] configuration"
        )
        have = {(p.resource_type, p.resource_pattern, p.permission): p.id for p in store.list_role_permissions(role.id)}
        for grant in have.keys() - grants:
            store.remove_role_permission(have[grant])
        for grant in grants - have.keys():
            store.add_role_permission(role.id, *grant)
        ids[(workspace, name)] = role.id
    return ids


def _sync_workspaces(model: AccessModel, backend_store_uri: str) -> None:
    from mlflow.entities.workspace import Workspace
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore as WorkspaceStore

    workspaces = WorkspaceStore(backend_store_uri)
    try:
        present = {w.name for w in workspaces.list_workspaces()}
        for team in model.teams:
            if team.workspace not in present:
                workspaces.create_workspace(Workspace(name=team.workspace, description=f"team {team.name}"))
    finally:
        workspaces._engine.dispose()


def apply_at_start(model: AccessModel, backend_store_uri: str) -> None:
    """Workspaces, managed roles and known users made to match the model; says which group it cannot read."""
    _sync_workspaces(model, backend_store_uri)
    role_ids = _sync_roles(model)
    groups = CloudIdentityGroups(groups_ttl(), os.environ.get(CLOUD_IDENTITY_ENV) or CLOUD_IDENTITY_URL)
    for group in model.groups:
        try:
            groups.resource_name(group)
        except GroupUnreadable as e:
            print(
                f"start.sh: cannot read group {group} ({e}); its members get nothing until the server's "
                "service account may read its memberships (docs/security.md: Teams and permissions)",
                flush=True,
            )
    resolver = Resolver(model, groups)
    for user in _store().list_users():
        if user.username != BOOTSTRAP_ADMIN:
            _sync_user(user.username, resolver.grants(user.username), role_ids)


def mlflow_app() -> Any:
    """The ASGI app MLflow serves: with [access], its auth app's (`create_app`, as `--app-name
    basic-auth` has uvicorn build it), else its plain FastAPI app."""
    if os.environ.get(ACCESS_ENV):
        import auth_middleware
        from mlflow.server.auth import create_app

        app = create_app()
        install_lookup_caches()
        auth_middleware.install(app)
        return app
    from mlflow.server.fastapi_app import app

    return app


def with_verified_user(headers: list[tuple[bytes, bytes]], email: str | None) -> list[tuple[bytes, bytes]]:
    """`headers` without any client's VERIFIED_USER_HEADER (in any spelling WSGI would read as it:
    '_' for '-', any case), plus the verified `email` when there is one."""
    name = VERIFIED_USER_HEADER.encode()
    kept = [(k, v) for k, v in headers if k.lower().replace(b"_", b"-") != name]
    return kept if email is None else [*kept, (name, email.encode())]
