"""The contract between the Terraform and the image, written once or checked wherever it is copied.

`docker/start.sh` is the one definition of the server's variables and their defaults (it ships in the
image, so it cannot import anything): every copy — the variables the service and the job set, the
config's defaults, the README's table, start.sh's own header, the Dockerfile — is parsed and compared.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from constructs.data.cloudsql_socket import CLOUDSQL_MOUNT
from constructs.serving.migration_job import MIGRATE_COMMAND
from stacks.config import ServerConfig
from tests.synth import Synth, env_of, one, resource

REPO = Path(__file__).resolve().parent.parent
START_SH = (REPO / "docker" / "start.sh").read_text()
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
# The environment table moved with *The server image and its sizing* (README: Reference).
README = (REPO / "docs" / "design.md").read_text()
REQUIRED = "<required>"
# What the deployment must set to something other than the image's default: the domain it serves,
# the audience of IAP's signed header (its backend service's id) and the IAM database login (the
# config's default; the image's is password login, which the URI shows), and the AI gateway's key.
DEPLOYMENT_VALUES = {
    "MLFLOW_ALLOWED_HOSTS",
    "MLFLOW_CORS_ALLOWED_ORIGINS",
    "MLFLOW_IAP_AUDIENCE",
    "MLFLOW_BACKEND_STORE_AUTH",
    "MLFLOW_CRYPTO_KEK_PASSPHRASE",
}


def start_sh_contract(text: str = START_SH) -> dict[str, str]:
    """{variable: default} from start.sh's `NAME=${NAME:-default}` lines; REQUIRED for `[ -n "${NAME:-}" ] ||`."""
    contract = dict.fromkeys(re.findall(r'^\[ -n "\$\{(\w+):-\}" \] \|\|', text, re.M), REQUIRED)
    for name, again, default in re.findall(r"^(\w+)=\$\{(\w+):-([^}]*)\}$", text, re.M):
        assert name == again, f"start.sh: {name} takes the default of {again}"
        contract[name] = default
    assert contract, "start.sh: no variables found; has its assignment style changed?"
    return contract


def start_sh_header(text: str = START_SH) -> dict[str, str]:
    """{variable: default} from the comment block at the top of start.sh."""
    words = {"required.": REQUIRED, "unset": ""}
    return {name: words.get(value, value) for name, value in re.findall(r"^#   ([A-Z][A-Z_]+)\s+(\S+)", text, re.M)}


def readme_contract() -> dict[str, str]:
    """{variable: default} from the README's environment table (rows of `VAR`s and their defaults)."""
    table = README.split("Its environment contract:", 1)[1].split("\n\n", 2)[1]
    contract = {}
    for names, defaults in re.findall(r"^\| (`[A-Z][^|]*) \| ([^|]*) \|", table, re.M):
        names = re.findall(r"`(\w+)`", names)
        values = re.findall(r"`([^`]*)`", defaults) or [defaults.strip()] * len(names)
        assert len(values) == len(names), f"README row {names}: {len(names)} variables but defaults {values}"
        contract |= {n: {"required": REQUIRED, "unset": ""}.get(v, v) for n, v in zip(names, values, strict=True)}
    return contract


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, example_config):
    """The service as a config that leaves every [server] key at its default synthesizes it."""
    cfg = example_config.model_copy(update={"server": ServerConfig()})
    stack = Synth([cfg], tmp_path_factory.mktemp("defaults")).stacks["mlflow-example"]
    return stack


def test_start_sh_parses_into_the_variables_it_documents():
    assert start_sh_contract()["MLFLOW_BACKEND_STORE_URI"] == REQUIRED
    assert start_sh_contract()["MLFLOW_WORKERS"] == "1"


@pytest.mark.parametrize("type_", ["google_cloud_run_v2_service", "google_cloud_run_v2_job"])
def test_every_variable_the_deployment_sets_is_one_start_sh_reads(mlflow, type_):
    body = one(mlflow, type_)
    container = (body["template"].get("template") or body["template"])["containers"][0]
    assert set(env_of(container)) <= set(start_sh_contract()), set(env_of(container)) - set(start_sh_contract())


def test_the_config_defaults_are_the_image_defaults(default_server):
    env = env_of(one(default_server, "google_cloud_run_v2_service")["template"]["containers"][0])
    contract = start_sh_contract()
    differs = {n: (v, contract[n]) for n, v in env.items() if contract[n] not in (v, REQUIRED)}
    assert set(differs) == DEPLOYMENT_VALUES, f"config default vs start.sh default: {differs}"


def test_the_readme_table_and_the_start_sh_header_say_what_start_sh_does():
    contract = start_sh_contract()
    assert readme_contract() == contract
    assert {n: v for n, v in start_sh_header().items() if n in contract} == contract


def test_the_dockerfile_port_is_the_default_port():
    assert re.search(r"^ENV PORT=(\d+)$", DOCKERFILE, re.M).group(1) == start_sh_contract()["PORT"]


def copied_to_app() -> tuple[list[str], str]:
    """The files the Dockerfile's COPY of the server's scripts installs, and where."""
    sources, destination = re.search(r"^COPY ((?:[\w.]+ )+)(/\S+/)$", DOCKERFILE, re.M).groups()
    return sources.split(), destination


def test_the_migration_command_is_a_script_the_dockerfile_installs_there():
    sources, destination = copied_to_app()
    directory, script = MIGRATE_COMMAND.rsplit("/", 1)
    assert script in sources and destination == f"{directory}/"
    assert (REPO / "docker" / script).exists()


def test_the_migration_output_is_the_command_the_apply_runs(mlflow):
    provisioner = resource(mlflow, "terraform_data", "migration-job/execution")["provisioner"][0]["local-exec"][
        "command"
    ]
    assert mlflow["output"]["migration_command"]["value"] == provisioner


def test_the_cloudsql_mount_is_where_the_backend_store_uri_looks(mlflow, mlflow_prod):
    iam_uri = env_of(one(mlflow, "google_cloud_run_v2_service")["template"]["containers"][0])[
        "MLFLOW_BACKEND_STORE_URI"
    ]
    password_uri = resource(mlflow_prod, "google_secret_manager_secret_version", "backend-store-uri/version")[
        "secret_data_wo"
    ]
    for stack, uri in ((mlflow, iam_uri), (mlflow_prod, password_uri)):
        mounts = one(stack, "google_cloud_run_v2_service")["template"]["containers"][0]["volume_mounts"]
        assert f"?host={CLOUDSQL_MOUNT}/" in uri
        assert {"name": "cloudsql", "mount_path": CLOUDSQL_MOUNT} in mounts


def test_terraform_and_the_image_accept_the_same_iap_audiences(monkeypatch):
    """constructs/serving/server_container.py copies the image's audience shapes (the image imports nothing of ours)."""
    import importlib.util
    import sys

    from constructs.serving.server_container import IAP_AUDIENCE_SHAPES

    monkeypatch.syspath_prepend(str(REPO / "docker"))  # it imports its neighbours in the image (route_rules, ...)
    spec = importlib.util.spec_from_file_location("iap_identity", REPO / "docker" / "iap_identity.py")
    image = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, image)  # its dataclasses look themselves up there
    spec.loader.exec_module(image)
    assert [s.pattern for s in IAP_AUDIENCE_SHAPES] == [s.pattern for s in image.AUDIENCE_SHAPES]


def test_the_dockerfile_copies_every_module_the_image_s_modules_import():
    sources, _ = copied_to_app()
    ours = {p.stem for p in (REPO / "docker").glob("*.py")}
    missing = set()
    for source in (s for s in sources if s.endswith(".py")):
        for node in ast.walk(ast.parse((REPO / "docker" / source).read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            missing |= {f"{n}.py" for n in names if n in ours and f"{n}.py" not in sources}
    assert "iap_access.py" in sources and missing == set()
