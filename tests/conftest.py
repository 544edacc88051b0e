"""Synthesize once per session; every spec reads the parsed JSON of these runs."""

from __future__ import annotations

import pytest

from stacks.config import EXAMPLE_CONFIG, REPO_ROOT, load_configs, parse_config
from tests.synth import Synth


def edited(text: str, *edits: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced, failing loudly when `old` is not there exactly once, so an
    edit to the example cannot silently turn the prod-like environment back into the example."""
    for old, new in edits:
        assert text.count(old) == 1, f"config/example.toml no longer contains {old!r} exactly once; update PROD_TOML"
        text = text.replace(old, new)
    return text


# A second environment that turns on every optional branch the example leaves off.
PROD_TOML = edited(
    EXAMPLE_CONFIG.read_text(),
    ('environment = "example"', 'environment = "prod"'),
    ('project_id = "example-mlflow-project"', 'project_id = "example-mlflow-prod"'),
    ('project_number = "123456789012"', 'project_number = "210987654321"'),
    (
        'domain = "mlflow.example.com"',
        'domain = "mlflow.prod.example.com"\n'
        'iap_programmatic_clients = ["123456789012-abc123.apps.googleusercontent.com"]\n'
        'client_impersonators = ["group:ml-team@example.com"]\n'
        'allowed_domains = ["example.com"]\n'
        'image_builders = ["group:ml-platform@example.com"]',
    ),
    # Password login (the example uses IAM), rotated: revision 2 must reach the password, the SQL
    # user and the secret version.
    # One state bucket for both, in the example's project (the example's [state] gets it by default).
    ("[state]\n", '[state]\nproject = "example-mlflow-project"\n'),
    ('tier = "db-f1-micro"', 'tier = "db-custom-2-7680"\nauth = "password"\npassword_revision = 2'),
    # The AI gateway's key rotated once: revision 2 is the secret version's and MLflow's KEK version.
    ("[server]\n", "[server]\ngateway_key_revision = 2\n"),
) + (
    '\n[dns]\nexisting_zone = "example-com"\n\n[ci]\ngithub_repository = "acme/mlflow-infra"\nrepository_id = 812345678\nrepository_owner_id = 4123456\n'
    '\n[iap_oauth_client]\nclient_id = "123456789012-iapclient.apps.googleusercontent.com"\nsecret_version = 2\n'
    '\n[alerts]\nemails = ["ml-platform-oncall@example.com", "sre@example.com"]\nlatency_p95_ms = 3000\n'
    '\n[budget]\nbilling_account = "012345-6789AB-CDEF01"\nmonthly_usd = 150\n'
)


def pytest_addoption(parser):
    parser.addoption(
        "--snapshot-update", action="store_true", help="rewrite tests/snapshots from this synth instead of comparing"
    )


@pytest.fixture(scope="session")
def example_config():
    return load_configs("")[0]


@pytest.fixture(scope="session")
def prod_config():
    return parse_config(PROD_TOML, "prod.toml")


DIRECT_IAP_CONFIG = REPO_ROOT / "config" / "direct-iap.toml"


@pytest.fixture(scope="session")
def direct_iap_config():
    return load_configs(str(DIRECT_IAP_CONFIG))[0]


TEAMS_CONFIG = REPO_ROOT / "config" / "teams.toml"


@pytest.fixture(scope="session")
def teams_config():
    return load_configs(str(TEAMS_CONFIG))[0]


@pytest.fixture(scope="session")
def app(tmp_path_factory, example_config, prod_config, direct_iap_config, teams_config) -> Synth:
    """The default example, a prod-like environment, the direct-IAP example and the teams example
    ([access]), synthesized together like `MLFLOW_CONFIG=a,b,c,d`."""
    return Synth([example_config, prod_config, direct_iap_config, teams_config], tmp_path_factory.mktemp("cdktf.out"))


@pytest.fixture(scope="session")
def mlflow(app):
    return app.stacks["mlflow-example"]


@pytest.fixture(scope="session")
def mlflow_prod(app):
    return app.stacks["mlflow-prod"]


@pytest.fixture(scope="session")
def mlflow_teams(app):
    return app.stacks["mlflow-teams"]


@pytest.fixture(scope="session")
def mlflow_direct_iap(app):
    return app.stacks["mlflow-small"]


@pytest.fixture(scope="session")
def project_stack(app):
    return app.stacks["mlflow-example-project"]


@pytest.fixture(scope="session")
def bootstrap(app):
    return app.stacks["bootstrap"]


def replace_config(cfg, **sections):
    """A copy of `cfg` with some fields or section fields changed: replace_config(cfg, server={...})."""
    changes = {}
    for name, value in sections.items():
        changes[name] = getattr(cfg, name).model_copy(update=value) if isinstance(value, dict) else value
    return cfg.model_copy(update=changes)
