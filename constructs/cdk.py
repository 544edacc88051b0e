"""The one place that picks the CDK runtime: cdktf 0.21 (default) or CDK Terrain (`CDK_RUNTIME=cdktn`).

CDKTF is archived and its google binding is frozen at provider 6.50; CDK Terrain is the maintained
rename (google 8.7). Everything else imports the runtime through this module only:

    from constructs.cdk import App, TerraformStack, Fn            # any name of cdktf / cdktn
    from constructs.cdk.google.storage_bucket import StorageBucket
    from constructs.cdk.random.password import Password

`constructs.cdk.google` and `constructs.cdk.random` are the chosen provider bindings. The cdktf google
package's `__init__` imports all ~1,470 resource modules (~10 s), so it is registered as a bare package
and each module is loaded when first imported (cdktn's package is lazy by itself). If a binding is
already imported normally it is used as it is.

Which Node jsii starts is settled earlier, in `stacks/node.py`: `import constructs` already starts it.
"""

from __future__ import annotations

import collections.abc
import importlib
import importlib.abc
import importlib.util
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # The type checker's view of `from constructs.cdk import X`: cdktf's own typed names (cdktn's are
    # the same jsii assembly renamed). At run time __getattr__ below serves the chosen runtime's.
    # The provider bindings (`constructs.cdk.google.*`, `.random.*`) are aliases the checker cannot
    # follow; pyproject.toml's [tool.mypy] override types them as Any, in one place.
    from cdktf import (
        Annotations as Annotations,
        App as App,
        Aspects as Aspects,
        Fn as Fn,
        GcsBackend as GcsBackend,
        IAspect as IAspect,
        ITerraformDependable as ITerraformDependable,
        LocalBackend as LocalBackend,
        LocalExecProvisioner as LocalExecProvisioner,
        TerraformOutput as TerraformOutput,
        TerraformProvider as TerraformProvider,
        TerraformResource as TerraformResource,
        TerraformResourceLifecycle as TerraformResourceLifecycle,
        TerraformStack as TerraformStack,
        TerraformVariable as TerraformVariable,
        Token as Token,
    )

RUNTIME_ENV_VAR = "CDK_RUNTIME"
INSTALL_CDKTN = 'pipenv sync --categories "packages dev-packages cdktn"'


@dataclass(frozen=True)
class Runtime:
    core: str
    google: str
    random: str
    # Whether the google package's own __init__ imports every resource module (then it is bypassed).
    eager_bindings: bool


RUNTIMES = {
    "cdktf": Runtime("cdktf", "cdktf_cdktf_provider_google", "cdktf_cdktf_provider_random", eager_bindings=True),
    "cdktn": Runtime("cdktn", "cdktn_provider_google", "cdktn_provider_random", eager_bindings=False),
}
DEFAULT_RUNTIME = "cdktf"


def _fail(message: str) -> typing.NoReturn:
    """Bad environment: one line naming the variable and the fix, exit 2, before anything is written."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _choose_runtime() -> tuple[str, Runtime]:
    name = os.environ.get(RUNTIME_ENV_VAR, "").strip() or DEFAULT_RUNTIME
    if name not in RUNTIMES:
        _fail(
            f"{RUNTIME_ENV_VAR}: {name!r} is not a CDK runtime; unset it (cdktf, the default) or set "
            f"{RUNTIME_ENV_VAR}=cdktn (CDK Terrain)"
        )
    runtime = RUNTIMES[name]
    if importlib.util.find_spec(runtime.core) is None:
        _fail(f"{RUNTIME_ENV_VAR}={name}: the {runtime.core} packages are not installed; run: {INSTALL_CDKTN}")
    return name, runtime


def _register_bare_package(package: str) -> ModuleType:
    """Put `package` in sys.modules without running its eager `__init__`; only `_jsii` (the assembly) loads."""
    if package in sys.modules:
        return sys.modules[package]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module(package)  # raises the usual ModuleNotFoundError
    bare = importlib.util.module_from_spec(spec)
    bare.__path__ = list(spec.submodule_search_locations)

    def __getattr__(name: str) -> ModuleType:  # noqa: N807 (a module's __getattr__, PEP 562)
        if name.startswith("__"):
            raise AttributeError(name)
        return importlib.import_module(f"{package}.{name}")

    bare.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[package] = bare
    try:
        importlib.import_module(f"{package}._jsii")
    except ImportError:  # the layout changed: fall back to the normal, slow import
        del sys.modules[package]
        return importlib.import_module(package)
    return bare


class _BindingAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `constructs.cdk.google[.x]` as the chosen binding's package (or its module `x`)."""

    def __init__(self, aliases: dict[str, str], eager: bool) -> None:
        self._aliases = aliases
        self._eager = eager

    def _target(self, fullname: str) -> str | None:
        for alias, package in self._aliases.items():
            if fullname == alias or fullname.startswith(alias + "."):
                return package + fullname[len(alias) :]
        return None

    def find_spec(
        self, fullname: str, path: collections.abc.Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if self._target(fullname) else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return ModuleType(spec.name)  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module: ModuleType) -> None:
        target = self._target(module.__name__)
        assert target is not None, module.__name__  # find_spec only serves names _target knows
        if self._eager and target in self._aliases.values():
            sys.modules[module.__name__] = _register_bare_package(target)
        else:
            sys.modules[module.__name__] = importlib.import_module(target)


RUNTIME, _runtime = _choose_runtime()
core: ModuleType = importlib.import_module(_runtime.core)
# A package without locations: its submodules `google` and `random` come from _BindingAlias only.
__path__: list[str] = []
sys.meta_path.insert(
    0,
    _BindingAlias(
        {f"{__name__}.google": _runtime.google, f"{__name__}.random": _runtime.random}, _runtime.eager_bindings
    ),
)


def __getattr__(name: str) -> Any:
    """`from constructs.cdk import X` is the chosen runtime's X (App, TerraformStack, Fn, Token, ...)."""
    if name in ("google", "random"):
        return importlib.import_module(f"{__name__}.{name}")
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(core, name)


def terraform_data(
    scope: Any,
    id: str,
    *,
    provisioners: list[Any],
    input: dict[str, Any] | None = None,
    triggers_replace: dict[str, Any] | None = None,
    depends_on: list[Any] | None = None,
) -> Any:
    """A `terraform_data` resource (a place for a provisioner) that synthesizes without a Terraform binary.

    The runtimes' own `DataResource` (cdktf 0.21 and cdktn 0.24 alike) adds a validation that runs
    `terraform version` at synth time, so synth failed on a machine without Terraform ("Could not
    determine version of terraform"). Terraform 1.4 is all it checks for, and every stack already
    requires >= 1.11 (stacks/providers.py), so this builds the same JSON from the generic resource:
    `input` and `triggers_replace` go in as overrides. tests/test_runtimes.py synthesizes with a PATH
    that has no terraform on it.
    """
    resource = core.TerraformResource(
        scope, id, terraform_resource_type="terraform_data", provisioners=provisioners, depends_on=depends_on
    )
    for name, value in (("input", input), ("triggers_replace", triggers_replace)):
        if value is not None:
            resource.add_override(name, value)
    return resource


def ephemeral_random_password(scope: Any, id: str, *, length: int) -> str:
    """An `ephemeral "random_password"` block (random >= 3.7, Terraform >= 1.10); its `result` reference.

    Ephemeral: a new value at every plan and apply that Terraform never writes to the plan or the state,
    so it may only feed a write-only argument (whose `_version` decides when it is actually sent).
    Neither runtime's Python API has ephemeral resources in both (cdktf 0.21 has none), so the block
    is written as a stack override, the same JSON on both. Its name is the scope's construct path.
    """
    stack = core.TerraformStack.of(scope)
    parts = [*scope.node.path.split("/")[1:], id]
    name = "_".join(parts)
    stack.add_override(
        f"ephemeral.random_password.{name}",
        {"length": length, "special": False, "//": {"metadata": {"path": "/".join([stack.node.id, *parts])}}},
    )
    return f"${{ephemeral.random_password.{name}.result}}"


def set_newer_provider_attribute(resource: Any, path: str, value: Any) -> None:
    """The one escape hatch for arguments the Terraform (google 8.x) has but the cdktf binding (6.50) lacks.

    `path` is the argument's address inside the resource, as in `add_override`: `secret_data_wo_version`,
    or `template.volumes.1.gcs.mount_options` (list items by index).

    * cdktf: `resource.add_override(path, value)`, unchecked by the binding.
    * CDK Terrain: the binding checks it. A top-level argument is set through its typed property; a nested
      one is checked name by name and its value by type against the binding's structs, then written
      with the same override, so both runtimes emit the same JSON (tests/test_runtimes.py proves it).

    Uses: GCS volume `mount_options` (provider 7+), `secret_data_wo_version` as a string (8.0),
    `database_roles` on `google_sql_user` (8.x). Meant next: `iap_enabled` on `google_cloud_run_v2_service`. When the
    default runtime's binding has an argument, set it typed and drop the call.
    """
    if RUNTIME == "cdktf":
        resource.add_override(path, value)
        return
    if "." not in path:
        if not isinstance(getattr(type(resource), path, None), property):
            raise AttributeError(f"{type(resource).__name__} has no argument {path!r} in {_runtime.google}")
        setattr(resource, path, value)
        return
    from jsii._type_checking import check_type

    hint: Any = type(resource)
    for part in path.split("."):
        hint = _binding_step(hint, part, type(resource).__name__, path)
    check_type(argname=f"{type(resource).__name__}.{path}", value=value, expected_type=hint)
    resource.add_override(path, value)


def _alternatives(hint: Any) -> Iterator[Any]:
    if typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            yield from _alternatives(arg)
    else:
        yield hint


def _binding_step(hint: Any, part: str, resource: str, path: str) -> Any:
    """The binding's type of `part` inside a value of type `hint` (a struct, or a list when `part` is an index)."""
    for option in _alternatives(hint):
        if part.isdigit():
            if typing.get_origin(option) is collections.abc.Sequence:
                return typing.get_args(option)[0]
        elif isinstance(option, type):
            fields = typing.get_type_hints(option.__init__)  # type: ignore[misc]
            if part in fields:
                return fields[part]
    raise AttributeError(f"{resource}.{path}: {part!r} is not in the {_runtime.google} binding")
