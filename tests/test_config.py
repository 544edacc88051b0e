"""Configuration: the example loads; every bad input is one line naming the field and the fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from stacks.config import EXAMPLE_CONFIG, GCP_REGIONS, ConfigError, load_configs, parse_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = EXAMPLE_CONFIG.read_text()


def with_line(key: str, value: str, text: str = EXAMPLE) -> str:
    """The example with `key = ...` (first occurrence) set to the TOML literal `value`."""
    pattern = re.compile(rf"^{re.escape(key)} = .*$", re.M)
    assert pattern.search(text), key
    return pattern.sub(f"{key} = {value}", text, count=1)


def rejection(text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "env.toml")
    message = str(raised.value)
    lines = message.splitlines()
    assert lines == raised.value.problems and all(line.startswith("env.toml: ") for line in lines), message
    assert len(set(lines)) == len(lines), "a problem is reported once"
    return message


def test_the_embedded_example_is_the_default(example_config):
    assert example_config.environment == "example"
    assert example_config.server.workers == 1
    assert example_config.server_image.endswith("/mlflow-images/mlflow-server:mlflow-3.17.2")


@pytest.mark.parametrize(
    "key, value, field, fix",
    [
        ("project_id", '"My_Project"', "project_id", "6-30 lowercase"),
        ("project_number", '"12ab"', "project_number", "gcloud projects describe"),
        ("region", '"europe-west99"', "region", "did you mean `europe-west9`?"),
        ("domain", '"https://mlflow.example.com"', "domain", "mlflow.example.com"),
        ("iap_members", '["ml-team@example.com"]', "iap_members", "user:EMAIL, group:EMAIL"),
        ("iap_members", '["allUsers"]', "iap_members", "refused"),
        ("iap_members", "[]", "iap_members", "list who may use MLflow"),
        ("private_services_cidr", '"10.10.0.0/16"', "network", "do not overlap"),
        ("subnet_cidr", '"10.10.0.0/33"', "network.subnet_cidr", 'like "10.10.0.0/24"'),
        ("tier", '"db-n1-standard-1"', "database.tier", "db-custom-CPUS-MEMORY_MB"),
        ("tier", '"db-custom-1-1024"', "database.tier", "at least 3840 MB"),
        ("bucket", '"' + "a" * 64 + '"', "state.bucket", "3-63 lowercase"),
        ("disk_size_gb", "5", "database.disk_size_gb", "between 10 and 65536"),
        ("max_overflow", "0", "server.max_overflow", "must be 1 or more — MLflow ignores 0"),
        ("memory", '"1GB"', "server.memory", '"1Gi"'),
        ("workers", '"2"', "server.workers", "whole number"),
    ],
)
def test_a_bad_value_names_the_field_and_the_fix(key, value, field, fix):
    message = rejection(with_line(key, value))
    assert message.startswith("env.toml: "), message
    assert f"{field}" in message and fix in message, message


def test_database_login_is_iam_unless_password_is_asked_for():
    assert parse_config(EXAMPLE, "env.toml").database.auth == "iam"
    chosen = parse_config(EXAMPLE.replace("[database]\n", '[database]\nauth = "password"\n'), "env.toml")
    assert chosen.database.auth == "password"


def test_an_unknown_database_login_method_is_refused():
    message = rejection(EXAMPLE.replace("[database]\n", '[database]\nauth = "token"\n'))
    assert (
        'database.auth: \'token\' is not a login method — use "iam" (no password, the default) or "password"' in message
    )


def test_an_unknown_state_location_is_refused():
    message = rejection(EXAMPLE.replace("[state]\n", '[state]\nlocation = "MARS"\n'))
    assert "state.location: 'MARS' is not a bucket location — use a region or EU, US or ASIA" in message


def test_unknown_keys_are_rejected_with_the_known_ones():
    message = rejection(EXAMPLE.replace("[server]\n", "[server]\nreplicas = 3\n"))
    assert "server.replicas: unknown key — remove it (known: " in message


def test_missing_required_keys_are_all_listed_at_once():
    text = "\n".join(line for line in EXAMPLE.splitlines() if not line.startswith(("project_id", "domain")))
    message = rejection(text)
    assert "project_id: missing" in message and "domain: missing" in message


def test_a_missing_state_table_asks_for_the_table():
    message = rejection(EXAMPLE.replace("[state]\nbucket", "[stateX]\nbucket"))
    assert "state: missing — add a [state] table" in message


def test_invalid_toml_is_one_line():
    assert "not valid TOML" in rejection('project_id = "unterminated\n')


def test_the_connection_budget_names_every_number():
    message = rejection(with_line("max_instances", "5"))
    assert (
        "5 instances x 1 workers x 2 stores x (2 pool + 1 overflow) + 6 migration + 3 reserved = 39 > "
        "25 max_connections of db-f1-micro" in message
    )


def test_the_connection_budget_accepts_a_config_that_fits():
    bigger = with_line("tier", '"db-custom-1-3840"', with_line("max_instances", "10"))
    cfg = parse_config(bigger)
    assert cfg.connection_budget == (10 * 6 + 6 + 3, 100)


@pytest.mark.parametrize(
    "tier, connections",
    [
        ("db-f1-micro", 25),
        ("db-g1-small", 50),
        ("db-custom-1-3840", 100),
        ("db-custom-2-7680", 400),
        ("db-custom-4-15360", 500),
        ("db-custom-16-61440", 800),
        ("db-custom-32-122880", 1000),
    ],
)
def test_max_connections_follow_cloud_sqls_memory_bands(tier, connections):
    assert parse_config(with_line("tier", f'"{tier}"')).database.max_connections == connections


def test_cloud_run_memory_must_fit_the_cpu():
    message = rejection(with_line("memory", '"8Gi"'))
    assert "server.memory: 8Gi does not fit 1 CPU on Cloud Run — use 512Mi to 4Gi" in message


def environment(name: str, project: str = "acme-ml", bucket: str = "acme-ml-tfstate", text: str = EXAMPLE) -> str:
    """The example as another environment, with its own name, project, number, domain and state bucket."""
    for key, value in (
        ("environment", name),
        ("project_id", project),
        ("project_number", "210987654321"),
        ("domain", f"mlflow.{name}.acme.example"),
        ("bucket", bucket),
    ):
        text = with_line(key, f'"{value}"', text)
    return text


def files(tmp_path, *texts: str) -> str:
    """MLFLOW_CONFIG naming one file per text, in order."""
    paths = []
    for number, text in enumerate(texts):
        paths.append(tmp_path / f"env{number}.toml")
        paths[-1].write_text(text)
    return ",".join(map(str, paths))


def test_two_environments_may_not_share_project_and_prefix(tmp_path):
    with pytest.raises(ConfigError, match=r": name_prefix: environments share project and prefix acme-ml/mlflow"):
        load_configs(files(tmp_path, environment("dev"), environment("prod")))


def test_environments_must_share_the_state_bucket(tmp_path):
    other = environment("other", bucket="another-state")
    with pytest.raises(ConfigError, match=r": state.bucket: environments disagree on the one state bucket"):
        load_configs(f"{EXAMPLE_CONFIG},{files(tmp_path, other)}")


def test_environments_in_two_projects_must_say_which_one_holds_the_state_bucket(tmp_path):
    """The bootstrap stack is built from [state], not from whichever file MLFLOW_CONFIG names first."""
    dev, prod = environment("dev", project="acme-ml-dev"), environment("prod", project="acme-ml-prod")
    with pytest.raises(
        ConfigError,
        match=r": state.project: environments disagree on the one state bucket \(acme-ml-dev, acme-ml-prod\) — write the same \[state\] project",
    ):
        load_configs(files(tmp_path, dev, prod))
    held = [text.replace("[state]\n", '[state]\nproject = "acme-ml-prod"\n') for text in (dev, prod)]
    assert {c.state.project for c in load_configs(files(tmp_path, *held))} == {"acme-ml-prod"}


def test_environments_in_two_regions_must_agree_on_the_state_buckets_location(tmp_path):
    us = with_line("region", '"us-central1"', environment("us", bucket="acme-ml-tfstate"))
    eu = with_line("name_prefix", '"eu"', environment("eu"))
    with pytest.raises(
        ConfigError,
        match=r": state.location: environments disagree on the one state bucket \(europe-west1, us-central1\)",
    ):
        load_configs(files(tmp_path, us, eu))


def test_the_state_bucket_defaults_to_the_environments_project_and_region():
    cfg = parse_config(with_line("region", '"us-central1"'))
    assert (cfg.state.project, cfg.state.location) == ("example-mlflow-project", "us-central1")
    assert parse_config(EXAMPLE.replace("[state]\n", '[state]\nlocation = "EU"\n')).state.location == "EU"


def test_the_bootstrap_owner_does_not_depend_on_the_order_of_files(tmp_path):
    from stacks.config import bootstrap_owner

    dev, prod = environment("dev"), with_line("name_prefix", '"prod"', environment("prod"))
    forward, backward = load_configs(files(tmp_path, dev, prod)), load_configs(files(tmp_path, prod, dev))
    assert bootstrap_owner(forward) == bootstrap_owner(backward) and bootstrap_owner(forward).environment == "dev"


def test_the_examples_placeholders_are_refused_in_any_other_environment():
    message = rejection(with_line("environment", '"prod"'))
    for key in (
        "project_id: 'example-mlflow-project'",
        "project_number: '123456789012'",
        "domain: 'mlflow.example.com'",
    ):
        assert f"{key} is the example's placeholder — write this environment's own" in message, message
    assert message.count("python -m stacks.init") == 1, message


def test_the_examples_state_bucket_is_refused_unless_the_example_is_selected(tmp_path):
    copied = environment("prod", bucket="example-mlflow-project-tfstate").replace(
        "[state]\n", '[state]\nproject = "example-mlflow-project"\n'
    )
    with pytest.raises(
        ConfigError, match=r": state.bucket: 'example-mlflow-project-tfstate' is the example's placeholder"
    ):
        load_configs(files(tmp_path, copied))
    assert [c.environment for c in load_configs(f"{EXAMPLE_CONFIG},{files(tmp_path, copied)}")] == ["example", "prod"]


def test_the_placeholders_are_the_shipped_examples_own_values(example_config, direct_iap_config, teams_config):
    from stacks.config import EXAMPLE_ENVIRONMENTS, EXAMPLE_PLACEHOLDERS, EXAMPLE_STATE_BUCKET

    shipped = (example_config, direct_iap_config, teams_config)
    assert tuple(c.environment for c in shipped) == EXAMPLE_ENVIRONMENTS
    assert {
        key: tuple(dict.fromkeys(getattr(c, key) for c in shipped if key != "domain" or c is example_config))
        for key in EXAMPLE_PLACEHOLDERS
    } == EXAMPLE_PLACEHOLDERS
    assert {c.state.bucket for c in shipped} == {EXAMPLE_STATE_BUCKET}


def test_the_direct_iap_examples_values_are_refused_in_a_copy():
    copied = (REPO / "config" / "direct-iap.toml").read_text().replace('environment = "small"', 'environment = "team"')
    message = rejection(copied)
    assert "project_id: 'example-mlflow-small' is the example's placeholder" in message
    assert "project_number: '123456789012' is the example's placeholder" in message


def test_a_missing_config_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"^MLFLOW_CONFIG: cannot read 'nope.toml'"):
        load_configs("nope.toml")


def test_main_rejects_bad_config_with_one_line_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(with_line("region", '"mars-north1"'))
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py")],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_CONFIG": str(bad), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "region: 'mars-north1' is not a Google Cloud region" in result.stderr
    assert not (tmp_path / "cdktf.out").exists()


def refuse_in(cwd: Path, text: str, **env: str) -> subprocess.CompletedProcess:
    """main.py, run like the CLI runs it, on a config file holding `text`."""
    bad = cwd / "bad.toml"
    bad.write_text(text)
    return subprocess.run(
        [sys.executable, str(REPO / "main.py")],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_CONFIG": str(bad), "PYTHONPATH": str(REPO), **env},
    )


@pytest.mark.parametrize("outdir", ["cdktf.out", "elsewhere/out"])
def test_a_refused_config_removes_the_previous_synth_output_instead_of_leaving_it_looking_current(tmp_path, outdir):
    stale = tmp_path / outdir
    (stale / "stacks" / "bootstrap").mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")
    env = {} if outdir == "cdktf.out" else {"CDKTF_OUTDIR": str(stale)}
    result = refuse_in(tmp_path, with_line("region", '"mars-north1"'), **env)
    assert result.returncode == 2 and result.stderr.count("\n") == 2, result.stderr
    assert result.stderr.splitlines()[1] == (
        f"error: removed the previous {outdir if not env else stale}: it no longer matches this configuration"
    )
    assert not stale.exists()


def test_a_refusal_keeps_a_directory_that_is_not_synth_output(tmp_path):
    (tmp_path / "cdktf.out").mkdir()
    (tmp_path / "cdktf.out" / "notes.txt").write_text("mine")
    assert refuse_in(tmp_path, with_line("region", '"mars-north1"')).returncode == 2
    assert (tmp_path / "cdktf.out" / "notes.txt").read_text() == "mine"


def test_a_refusal_imports_no_cdk_runtime_so_no_node_starts(tmp_path):
    """jsii starts Node when its runtime is imported (any `constructs.` module imports it): refusing must be instant."""
    bad = tmp_path / "bad.toml"
    bad.write_text(with_line("region", '"mars-north1"'))
    probe = (
        "import sys, main\n"
        "assert main.main() == 2\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jsii', 'constructs', 'cdktf', 'cdktn')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_CONFIG": str(bad), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0 and result.stdout == "[]\n", result.stdout + result.stderr


def test_every_problem_of_a_file_is_reported_at_once_with_the_nearest_names():
    """Unknown keys do not hide the value errors of the same file (a second run is never needed)."""
    text = with_line("region", '"us-central"', with_line("workers", '"2"')).replace(
        "[server]\n", "[server]\nmin_instance = 1\n"
    )
    text = text.replace("[network]\n", '[network]\nsubnet = "10.0.0.0/24"\n')
    message = rejection(text)
    for problem in (
        "region: 'us-central' is not a Google Cloud region — did you mean `us-central1`?",
        "server.min_instance: unknown key — did you mean `min_instances`?",
        "network.subnet: unknown key — did you mean `subnet_cidr`?",
        "server.workers: must be a whole number, got the string '2' — drop the quotes: workers = 2",
    ):
        assert problem in message, message
    assert "pydantic" not in message and "http" not in message, message


def test_an_unknown_key_with_no_near_name_lists_the_known_ones():
    message = rejection(EXAMPLE + "\n[ci]\nxyz = 1\n")
    assert "ci.xyz: unknown key — remove it (known: github_repository, repository_id, repository_owner_id)" in message


def test_a_section_that_is_not_a_table_is_refused():
    assert "dns: must be a [dns] table" in rejection(EXAMPLE.replace("[state]\n", 'dns = "example-com"\n\n[state]\n'))


# Property-based: whatever malformed value lands in a field, it is refused on one line naming it.

project_ids = st.one_of(
    st.text(min_size=0, max_size=5, alphabet="abcdefghijklmnopqrstuvwxyz"),
    st.text(min_size=31, max_size=40, alphabet="abcdefghijklmnopqrstuvwxyz"),
    st.from_regex(r"[0-9A-Z_][a-z0-9]{6,20}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9]{5,20}-", fullmatch=True),
)


@settings(max_examples=60, deadline=None)
@given(project_ids)
def test_any_malformed_project_id_is_refused(value):
    assert "project_id: " in rejection(with_line("project_id", f'"{value}"'))


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=25).filter(
        lambda r: r not in GCP_REGIONS
    )
)
def test_any_unknown_region_is_refused(value):
    assert "region: " in rejection(with_line("region", f'"{value}"'))


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),  # a single label
        st.from_regex(r"-[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True),  # label starting with a hyphen
        st.from_regex(r"[a-z]{1,8}\.[a-z]{1,8}\.[0-9]{1,3}", fullmatch=True),  # numeric TLD
        st.from_regex(r"[a-z]{1,8}\.[A-Z]{2,4}", fullmatch=True),  # upper case
        st.from_regex(r"[a-z]{1,8}_[a-z]{1,8}\.com", fullmatch=True),  # underscore
        st.from_regex(r"[a-z]{1,8}\.com/[a-z]{1,5}", fullmatch=True),  # a path, not a host
    )
)
def test_any_non_hostname_domain_is_refused(value):
    assert "domain: " in rejection(with_line("domain", f'"{value}"'))


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.from_regex(
            r"(owner|member|User|users|sa|serviceaccount|allUsers|allAuthenticatedUsers)(:[a-z]{1,8}@example\.com)?",
            fullmatch=True,
        ),
        st.from_regex(r"(user|group|serviceAccount):[a-z]{1,8}", fullmatch=True),  # not an email
        st.from_regex(r"domain:[a-z]{1,8}", fullmatch=True),  # not a domain
    )
)
def test_any_member_without_a_valid_prefix_and_identity_is_refused(member):
    assert "iap_members: " in rejection(with_line("iap_members", f'["{member}"]'))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 255), st.integers(16, 24), st.integers(0, 8))
def test_any_overlapping_pair_of_ranges_is_refused(second_octet, prefix, extra):
    """A subnet carved out of the private services range always overlaps it."""
    services = f"10.{second_octet}.0.0/{prefix}"
    subnet = f"10.{second_octet}.0.0/{min(prefix + extra, 26)}"
    text = with_line("private_services_cidr", f'"{services}"', with_line("subnet_cidr", f'"{subnet}"'))
    assert "overlaps private_services_cidr" in rejection(text)


def test_a_member_listed_twice_is_refused_because_grants_are_keyed_by_member():
    message = rejection(
        with_line("iap_members", '["group:ml@example.com", "user:a@example.com", "group:ML@example.com"]')
    )
    assert "iap_members: 'group:ml@example.com' is listed more than once" in message, message


def test_an_impersonator_listed_twice_is_refused():
    text = with_line(
        "iap_members", '["group:ml@example.com"]\nclient_impersonators = ["user:a@example.com", "user:a@example.com"]'
    )
    assert "client_impersonators: 'user:a@example.com' is listed more than once" in rejection(text)


def test_an_edit_of_the_prod_like_fixture_whose_target_is_gone_fails_loudly():
    from tests.conftest import edited

    with pytest.raises(AssertionError, match="no longer contains 'tier = \"db-n1\"' exactly once"):
        edited(EXAMPLE, ('tier = "db-n1"', 'tier = "db-custom-2-7680"'))


# --- issue 14: first deploy in an organization ------------------------------------------------------


def test_members_outside_allowed_domains_are_refused_at_synth_not_at_apply():
    text = with_line("iap_members", '["group:ml@example.com", "user:guest@gmail.com"]')
    text = text.replace(
        "iap_members =", 'allowed_domains = ["example.com"]\nimage_builders = ["user:ci@partner.io"]\niap_members ='
    )
    message = rejection(text)
    assert "iap_members: 'user:guest@gmail.com' is outside allowed_domains (example.com)" in message
    assert "image_builders: 'user:ci@partner.io' is outside allowed_domains" in message
    assert "group:ml@example.com" not in message


def test_allowed_domains_accept_members_of_those_domains_and_service_accounts():
    text = with_line(
        "iap_members",
        '["group:ml@Example.com", "domain:example.com", "serviceAccount:x@other-project.iam.gserviceaccount.com"]',
    )
    cfg = parse_config(text.replace("iap_members =", 'allowed_domains = ["example.com"]\niap_members ='), "env.toml")
    assert cfg.allowed_domains == ("example.com",)


def test_an_allowed_domain_must_be_a_domain():
    message = rejection(EXAMPLE.replace("iap_members =", 'allowed_domains = ["example"]\niap_members ='))
    assert "allowed_domains: 'example' is not a domain" in message


def test_image_builders_must_be_iam_members():
    message = rejection(EXAMPLE.replace("iap_members =", 'image_builders = ["alice@example.com"]\niap_members ='))
    assert "image_builders: 'alice@example.com' is not an IAM member — write user:EMAIL" in message


def test_a_custom_iap_oauth_client_needs_a_client_id_and_a_positive_secret_version():
    message = rejection(EXAMPLE + '\n[iap_oauth_client]\nclient_id = "my-client"\nsecret_version = 0\n')
    assert "iap_oauth_client.client_id: 'my-client' is not an OAuth client id" in message
    assert "iap_oauth_client.secret_version: 0 must be 1 or more" in message


def test_the_iap_oauth_client_has_no_secret_key_to_put_in_a_file():
    message = rejection(
        EXAMPLE + '\n[iap_oauth_client]\nclient_id = "1-a.apps.googleusercontent.com"\nclient_secret = "x"\n'
    )
    assert "iap_oauth_client.client_secret: unknown key" in message


def test_by_default_the_google_managed_oauth_client_is_used(example_config):
    assert example_config.iap_oauth_client.client_id == ""
    assert example_config.allowed_domains == () and example_config.image_builders == ()


# --- Operations (#18): [alerts] and [budget]. Separate tests so the pydantic port (#19) can keep them. ---

ALERTS = '\n[alerts]\nemails = ["oncall@example.com"]\n'
BUDGET = '\n[budget]\nbilling_account = "012345-6789AB-CDEF01"\nmonthly_usd = 50\n'


def test_no_alerts_table_means_alerts_are_off(example_config):
    assert example_config.alerts.enabled is False
    assert example_config.budget.billing_account == ""


def test_the_commented_operations_block_of_the_example_parses_when_uncommented():
    uncommented = re.sub(r"^# (\[alerts\]|\[budget\]|[a-z_]+ = .*)$", r"\1", EXAMPLE, flags=re.M)
    cfg = parse_config(uncommented, "example.toml")
    assert cfg.alerts.emails == ("ml-platform-oncall@example.com",) and cfg.alerts.enabled
    assert cfg.budget.monthly_usd == 50


def test_alert_thresholds_default_from_the_config():
    from stacks.config import alert_thresholds

    cfg = parse_config(EXAMPLE + ALERTS, "env.toml")
    assert alert_thresholds(cfg) == {
        "error_ratio": 0.05,
        "latency_p95_ms": 2000,
        "max_instances": 2,
        "sql_cpu": 0.8,
        "sql_disk": 0.8,
        "sql_connections": 20,  # 80% of db-f1-micro's 25
    }


def test_alert_thresholds_follow_overrides_and_the_tier():
    from stacks.config import alert_thresholds

    text = (
        with_line("tier", '"db-custom-2-7680"', EXAMPLE) + ALERTS + "connections_percent = 50\nsql_cpu_percent = 90\n"
    )
    thresholds = alert_thresholds(parse_config(text, "env.toml"))
    assert thresholds["sql_connections"] == 200 and thresholds["sql_cpu"] == 0.9


@pytest.mark.parametrize(
    "extra, field, fix",
    [
        ('emails = ["oncall"]', "alerts.emails", "is not an e-mail address"),
        ('emails = ["a@example.com", "a@example.com"]', "alerts.emails", "list each address once"),
        ('emails = "a@example.com"', "alerts.emails", "list of quoted strings"),
        ("connections_percent = 120", "alerts.connections_percent", "between 1 and 100"),
        ("error_ratio_percent = 0", "alerts.error_ratio_percent", "between 1 and 100"),
        ("latency_p95_ms = 0", "alerts.latency_p95_ms", "between 1 and 900000"),
        ("latency_ms = 10", "alerts.latency_ms", "unknown key"),
    ],
)
def test_bad_alerts_settings_are_refused_naming_the_field(extra, field, fix):
    base = EXAMPLE + "\n[alerts]\n" + ("" if extra.startswith("emails") else 'emails = ["oncall@example.com"]\n')
    message = rejection(base + extra + "\n")
    assert f"{field}: " in message and fix in message, message


def test_thresholds_without_recipients_are_refused():
    message = rejection(EXAMPLE + "\n[alerts]\nsql_cpu_percent = 90\n")
    assert "alerts.emails: is empty" in message


@pytest.mark.parametrize(
    "budget, field, fix",
    [
        ('billing_account = "0123-4567"\nmonthly_usd = 50', "budget.billing_account", "XXXXXX-XXXXXX-XXXXXX"),
        ('billing_account = "012345-6789AB-CDEF01"', "budget.monthly_usd", "1 or more"),
        ("monthly_usd = 50", "budget.billing_account", "missing"),
        ('billing_account = "012345-6789AB-CDEF01"\nmonthly_usd = 9.5', "budget.monthly_usd", "whole number"),
    ],
)
def test_bad_budget_settings_are_refused_naming_the_field(budget, field, fix):
    message = rejection(EXAMPLE + "\n[budget]\n" + budget + "\n")
    assert f"{field}: " in message and fix in message, message


def test_a_budget_alone_needs_no_alerts():
    cfg = parse_config(EXAMPLE + BUDGET, "env.toml")
    assert cfg.budget.billing_account == "012345-6789AB-CDEF01" and not cfg.alerts.enabled


def test_a_restored_instance_name_must_be_a_cloud_sql_name():
    message = rejection(EXAMPLE.replace("[database]\n", '[database]\ninstance_name = "Mlflow_DB"\n'))
    assert "database.instance_name: 'Mlflow_DB' is not a Cloud SQL instance name" in message


def test_protect_data_is_true_or_false_and_on_by_default():
    assert parse_config(EXAMPLE).protect_data is True
    assert parse_config("protect_data = false\n" + EXAMPLE).protect_data is False
    assert "protect_data: must be true or false, got 'no'" in rejection('protect_data = "no"\n' + EXAMPLE)


def test_a_repository_without_its_numeric_ids_is_refused_with_the_command_that_prints_them():
    message = rejection(EXAMPLE + '\n[ci]\ngithub_repository = "acme/infra"\n')
    assert (
        "ci.repository_id: missing — the workload identity provider binds the repository by id, not name: write the first "
        "number `gh api repos/acme/infra --jq .id,.owner.id` prints" in message
    )
    assert "ci.repository_owner_id: missing —" in message and "write the second number" in message


def test_ids_without_a_repository_are_refused():
    message = rejection(EXAMPLE + "\n[ci]\nrepository_id = 812345678\n")
    assert (
        "ci.repository_id: 812345678 is set without ci.github_repository — set the repository too, or remove it"
        in message
    )


@pytest.mark.parametrize("value, problem", [('"812345678"', "must be a whole number"), ("-1", "must be 0 or more")])
def test_repository_ids_are_whole_numbers(value, problem):
    message = rejection(
        EXAMPLE + f'\n[ci]\ngithub_repository = "acme/infra"\nrepository_id = {value}\nrepository_owner_id = 2\n'
    )
    assert "ci.repository_id: " in message and problem in message, message


def test_a_repository_with_its_ids_is_accepted():
    cfg = parse_config(
        EXAMPLE + '\n[ci]\ngithub_repository = "acme/infra"\nrepository_id = 812345678\nrepository_owner_id = 4123456\n'
    )
    assert (cfg.ci.repository_id, cfg.ci.repository_owner_id) == (812345678, 4123456)


def test_synth_names_the_files_it_builds_and_their_stacks(example_config, direct_iap_config):
    import main

    assert main.what_is_built("config/example.toml,config/direct-iap.toml", [example_config, direct_iap_config]) == [
        "synth: config/example.toml (environment example: stacks mlflow-example-project, mlflow-example)",
        "synth: config/direct-iap.toml (environment small: stacks mlflow-small-project, mlflow-small)",
    ]


def test_synth_warns_when_it_built_the_example_while_config_holds_an_environment(tmp_path, example_config):
    """A new shell without MLFLOW_CONFIG: the example is built, and `cdktf deploy mlflow-prod` would find no stack."""
    import main

    for shipped in ("example.toml", "direct-iap.toml"):
        (tmp_path / shipped).write_text("")
    assert main.what_is_built("", [example_config], tmp_path) == [
        "synth: config/example.toml (environment example: stacks mlflow-example-project, mlflow-example)"
    ]
    (tmp_path / "prod.toml").write_text("")
    (tmp_path / "dev.toml").write_text("")
    lines = main.what_is_built("", [example_config], tmp_path)
    assert lines[1] == (
        "warning: MLFLOW_CONFIG is not set, so this is the embedded example, not config/dev.toml, config/prod.toml; "
        "export MLFLOW_CONFIG=config/dev.toml,config/prod.toml to build yours"
    )
    assert len(main.what_is_built("config/prod.toml", [example_config], tmp_path)) == 1


def test_several_mistakes_give_one_line_each_in_the_file_field_problem_fix_form():
    """The issue's file: a region from another cloud, a member without its kind, a quoted number, a budget
    the tier cannot serve. Each is one line; the bad member does not also make the list "empty"; the
    budget is checked although other fields failed."""
    text = with_line("region", '"eu-west-1"', with_line("iap_members", '["ml-platform@example.com"]'))
    text = with_line("min_instances", '"1"', with_line("max_instances", "20", text))
    lines = rejection(text).splitlines()
    assert lines == [
        "env.toml: region: 'eu-west-1' is not a Google Cloud region — did you mean `europe-west1`? "
        "(the Google Cloud region nearest to `eu-west-1`)",
        "env.toml: iap_members: 'ml-platform@example.com' is not an IAM member — write user:EMAIL, group:EMAIL, "
        "serviceAccount:EMAIL or domain:DOMAIN (allUsers and allAuthenticatedUsers are refused)",
        "env.toml: server.min_instances: must be a whole number, got the string '1' — drop the quotes: min_instances = 1",
        "env.toml: server: connection budget exceeded: 20 instances x 1 workers x 2 stores x (2 pool + 1 overflow) + "
        "6 migration + 3 reserved = 129 > 25 max_connections of db-f1-micro — lower server.max_instances, workers or "
        "pool_size, or pick a larger database.tier",
    ]


def test_a_check_across_fields_stays_silent_when_a_field_it_reads_failed():
    """No cascade: with workers itself wrong, no budget is computed from a stand-in value."""
    text = with_line("workers", '"many"', with_line("max_instances", "20"))
    message = rejection(text)
    assert "server.workers: must be a whole number" in message and "connection budget" not in message, message
    message = rejection(with_line("tier", '"db-n1-standard-1"', with_line("max_instances", "20")))
    assert "database.tier" in message and "connection budget" not in message, message


def test_checks_across_fields_run_although_another_section_failed():
    text = with_line("region", '"mars-north1"', with_line("environment", '"prod"'))
    message = rejection(text)
    assert (
        "region: 'mars-north1'" in message
        and "project_id: 'example-mlflow-project' is the example's placeholder" in message
    )


@pytest.mark.parametrize(
    "given, meant",
    [
        ("eu-west-1", "europe-west1"),
        ("eu-west-2", "europe-west2"),
        ("eu-central-1", "europe-west3"),
        ("us-east-1", "us-east4"),
        ("us-west-2", "us-west1"),
        ("ap-northeast-1", "asia-northeast1"),
        ("ap-southeast-2", "australia-southeast1"),
        ("westeurope", "europe-west4"),
        ("northeurope", "europe-west1"),
        ("uksouth", "europe-west2"),
        ("eastus", "us-east4"),
        ("West Europe", "europe-west4"),
        ("europe-west1-b", "europe-west1"),
        ("Europe-West1", "europe-west1"),
        ("europe-west", "europe-west9"),
        ("eu-west-9", "europe-west9"),
        ("us-central", "us-central1"),
    ],
)
def test_a_region_is_suggested_from_the_same_geography(given, meant):
    """Another cloud's name for a place is answered with Google's region there, never by spelling across an ocean."""
    message = rejection(with_line("region", f'"{given}"'))
    assert re.search(rf"region: {re.escape(repr(given))} is not a Google Cloud region — .*`{meant}`", message), message
    suggested = re.findall(r"`([a-z]+-[a-z]+\d+)`", message)
    assert suggested[0] == meant, message


@pytest.mark.parametrize(
    "key, value, fix",
    [
        ("min_instances", '"1"', "drop the quotes: min_instances = 1"),
        ("disk_size_gb", '"20"', "drop the quotes: disk_size_gb = 20"),
        ("protect_data", '"false"', "drop the quotes: protect_data = false"),
        ("project_number", "123456789012", 'put it in double quotes, e.g. project_number = "123456789012"'),
    ],
)
def test_a_value_of_the_wrong_kind_says_how_to_write_it(key, value, fix):
    text = with_line(key, value) if key != "protect_data" else f"{key} = {value}\n" + EXAMPLE
    assert fix in rejection(text)
