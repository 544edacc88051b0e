"""Load the prebuilt google provider binding without its eager package `__init__`.

`cdktf_cdktf_provider_google/__init__.py` imports all ~1,470 resource submodules (~10 s) although a
stack uses a few dozen. Each submodule imports only `.._jsii` (the assembly) and cdktf, so registering
the package as a bare module with the same `__path__` lets `from cdktf_cdktf_provider_google.x import X`
load just `x`. If the package is already imported (or a later binding is cheap to import), it is left
alone; if its layout ever changes so that the bare package cannot serve a submodule, the normal import
is used instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

PACKAGE = "cdktf_cdktf_provider_google"

# jsii prints a page-wide banner on every synth because Node 20 is past its end of life; the runtime
# reads these comma-separated lists of Node majors (see jsii's bin__jsii-runtime.js).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "18,20")


def _lazy_getattr(package: ModuleType):
    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return importlib.import_module(f"{PACKAGE}.{name}")

    return __getattr__


def register_lazily() -> ModuleType:
    """Put a bare `cdktf_cdktf_provider_google` package in sys.modules; return the package in use."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(PACKAGE)  # raises the usual ModuleNotFoundError
    package = importlib.util.module_from_spec(spec)
    package.__path__ = list(spec.submodule_search_locations)
    package.__getattr__ = _lazy_getattr(package)
    sys.modules[PACKAGE] = package
    try:
        importlib.import_module(f"{PACKAGE}._jsii")
    except ImportError:
        del sys.modules[PACKAGE]
        return importlib.import_module(PACKAGE)
    return package
