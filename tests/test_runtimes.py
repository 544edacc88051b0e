"""One Terraform, two CDK runtimes: cdktf 0.21 (default) and CDK Terrain (`CDK_RUNTIME=cdktn`).

Each runtime synthesizes the example, the prod-like config (tests/conftest.py), config/direct-iap.toml and
config/teams.toml through `main.py`,
in its own process, with a PATH that has node but no terraform; the JSON must be identical except
for version metadata. Because CDK Terrain's binding (google 8.7) type-checks the arguments the
cdktf binding (6.50) cannot, this also checks every `set_newer_provider_attribute` used on cdktf.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from constructs.cdk import INSTALL_CDKTN
from stacks.config import EXAMPLE_CONFIG
from stacks.node import PROJECT_NODE
from tests.conftest import DIRECT_IAP_CONFIG, PROD_TOML, TEAMS_CONFIG

REPO = Path(__file__).resolve().parent.parent
RUNTIMES = ("cdktf", "cdktn")


def require_cdktn() -> None:
    """Outside CI a missing CDK Terrain skips; in CI (CI=true) it fails, so CI always compares."""
    if importlib.util.find_spec("cdktn") is not None:
        return
    message = f"CDK Terrain is not installed; run: {INSTALL_CDKTN}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def path_without_terraform(tmp: Path) -> str:
    """A PATH holding only the node jsii runs on: synth must not need a terraform binary."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    node = PROJECT_NODE if PROJECT_NODE.exists() else Path(shutil.which("node"))
    (bin_dir / "node").symlink_to(node)
    return str(bin_dir)


def synth(runtime: str, outdir: Path, path: str, configs: str, **env: str) -> subprocess.CompletedProcess:
    outdir.mkdir(parents=True)
    return subprocess.run(
        [sys.executable, str(REPO / "main.py")],
        cwd=outdir,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": path,
            "PYTHONPATH": str(REPO),
            "MLFLOW_CONFIG": configs,
            "CDK_RUNTIME": runtime,
            **env,
        },
    )


def read_out(outdir: Path) -> dict[str, dict]:
    """Every stack's JSON and the manifest, without the metadata that names the runtime's version."""
    out = outdir / "cdktf.out"
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("version", None)
    files = {"manifest.json": manifest}
    for name in manifest["stacks"]:
        stack = json.loads((out / "stacks" / name / "cdk.tf.json").read_text())
        metadata = stack.get("//", {}).get("metadata", {})
        metadata.pop("version", None)  # "0.21.0" / "0.24.0"
        # Which arguments came in as overrides: on cdktn the typed ones are set typed (same JSON).
        metadata.pop("overrides", None)
        files[name] = stack
    return files


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory) -> dict[str, dict[str, dict]]:
    require_cdktn()
    tmp = tmp_path_factory.mktemp("runtimes")
    prod = tmp / "prod.toml"
    prod.write_text(PROD_TOML)
    path = path_without_terraform(tmp)
    configs = f"{EXAMPLE_CONFIG},{prod},{DIRECT_IAP_CONFIG},{TEAMS_CONFIG}"
    with ThreadPoolExecutor(len(RUNTIMES)) as pool:
        runs = dict(zip(RUNTIMES, pool.map(lambda r: synth(r, tmp / r, path, configs), RUNTIMES), strict=True))
    for runtime, run in runs.items():
        assert run.returncode == 0, f"{runtime} synth failed without terraform on PATH:\n{run.stderr[-3000:]}"
    return {runtime: read_out(tmp / runtime) for runtime in RUNTIMES}


def test_synth_needs_no_terraform_binary(synthesized, tmp_path):
    """cdktf's DataResource ran `terraform version` at synth; constructs.cdk.terraform_data does not."""
    assert shutil.which("terraform", path=path_without_terraform(tmp_path)) is None
    for runtime in RUNTIMES:
        assert {"bootstrap", "mlflow-example", "mlflow-prod", "mlflow-small", "mlflow-teams"} <= set(
            synthesized[runtime]
        ), runtime


def test_both_runtimes_emit_the_same_terraform_for_the_example_and_prod(synthesized):
    cdktf, cdktn = synthesized["cdktf"], synthesized["cdktn"]
    assert sorted(cdktf) == sorted(cdktn)
    diffs = []
    for name in sorted(cdktf):
        a, b = (json.dumps(files[name], indent=1, sort_keys=True).splitlines() for files in (cdktf, cdktn))
        diffs.extend(difflib.unified_diff(a, b, f"cdktf/{name}", f"cdktn/{name}", lineterm="", n=2))
    assert not diffs, "the runtimes emit different Terraform:\n" + "\n".join(diffs[:200])


def test_a_bad_cdk_runtime_is_refused_on_one_line_and_writes_nothing(tmp_path):
    run = synth("cdk", tmp_path / "out", os.environ["PATH"], "")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: CDK_RUNTIME: 'cdk' is not a CDK runtime; unset it (cdktf, the default) or set CDK_RUNTIME=cdktn (CDK Terrain)"
    ]
    assert not (tmp_path / "out" / "cdktf.out").exists()


ESCAPE_HATCH_PROBE = """
import stacks
from constructs.cdk import App, TerraformStack, set_newer_provider_attribute
from constructs.cdk.google.cloud_run_v2_job import CloudRunV2Job, CloudRunV2JobTemplate, CloudRunV2JobTemplateTemplate
stack = TerraformStack(App(), "s")
job = CloudRunV2Job(stack, "job", location="europe-west1", name="j",
                    template=CloudRunV2JobTemplate(template=CloudRunV2JobTemplateTemplate()))
set_newer_provider_attribute(job, {path!r}, {value!r})
print("accepted")
"""


@pytest.mark.parametrize(
    "path, value, refusal",
    [
        (
            "template.template.volumes.0.gcs.mount_option",
            ["uid=1"],
            "'mount_option' is not in the cdktn_provider_google binding",
        ),
        ("template.template.volumes.0.gcs.mount_options", [1], "TypeError"),
        ("no_such_argument", "x", "CloudRunV2Job has no argument 'no_such_argument'"),
    ],
)
def test_on_cdk_terrain_the_escape_hatch_is_checked_against_the_binding(path, value, refusal):
    require_cdktn()
    probe = ESCAPE_HATCH_PROBE.format(path=path, value=value)
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "CDK_RUNTIME": "cdktn"},
    )
    assert run.returncode != 0 and "accepted" not in run.stdout
    assert refusal in run.stderr, run.stderr[-2000:]


def test_on_cdk_terrain_the_escape_hatch_accepts_what_the_binding_types():
    require_cdktn()
    probe = ESCAPE_HATCH_PROBE.format(path="template.template.volumes.0.gcs.mount_options", value=["uid=1"])
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "CDK_RUNTIME": "cdktn"},
    )
    assert run.stdout.strip() == "accepted", run.stderr[-2000:]


RUNTIME_PACKAGES = ("cdktf", "cdktn", "cdktf_cdktf_provider_", "cdktn_provider_")


def test_only_the_runtime_module_imports_a_runtime_by_name():
    """constructs/ and stacks/ import the runtime and bindings through constructs.cdk alone."""
    offenders = []
    for source in sorted([*(REPO / "constructs").rglob("*.py"), *(REPO / "stacks").glob("*.py"), REPO / "main.py"]):
        if source == REPO / "constructs" / "cdk.py":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{source.relative_to(REPO)}: {n}" for n in names if n.split(".")[0].startswith(RUNTIME_PACKAGES)
            ]
    assert not offenders, offenders


def test_every_locked_install_script_is_allowed_so_npm_12_still_installs_node():
    """npm 12 skips dependency install scripts not listed in package.json's allowScripts; the `node`
    package's preinstall is what puts Node 22 in node_modules, so a gap would break set-up silently."""
    repo = Path(__file__).resolve().parent.parent
    lock = json.loads((repo / "package-lock.json").read_text())
    scripted = {
        path.rpartition("node_modules/")[2] for path, pkg in lock["packages"].items() if pkg.get("hasInstallScript")
    }
    assert "node" in scripted
    allowed = json.loads((repo / "package.json").read_text()).get("allowScripts", {})
    assert scripted == {name for name, ok in allowed.items() if ok is True}
