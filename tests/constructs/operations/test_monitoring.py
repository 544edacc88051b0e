"""Monitoring: with [alerts], channels, documented policies and a dashboard; without, none of it.

Every metric type, label and monitored resource a filter names must be one Google documents; the
tables below say where each is documented. A filter naming anything else fails the test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from constructs.operations.monitoring import AlertThresholds, MonitoringProps
from stacks.config import EXAMPLE_CONFIG, parse_config
from tests.synth import Synth, one, resources

RUN = "https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run"
SQL = "https://cloud.google.com/sql/docs/postgres/admin-api/metrics"
STORAGE = "https://cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-storage"
UPTIME = "https://cloud.google.com/monitoring/api/metrics_gcp_i_o#gcp-monitoring"
LOG_BASED = "https://cloud.google.com/logging/docs/logs-based-metrics"

# metric type -> (the page documenting it, the metric labels a filter may use)
DOCUMENTED_METRICS = {
    "run.googleapis.com/request_count": (RUN, {"response_code_class"}),
    "run.googleapis.com/request_latencies": (RUN, set()),
    "run.googleapis.com/container/instance_count": (RUN, {"state"}),
    "run.googleapis.com/container/memory/utilizations": (RUN, set()),
    "run.googleapis.com/job/completed_execution_count": (RUN, {"result"}),
    "cloudsql.googleapis.com/database/cpu/utilization": (SQL, set()),
    "cloudsql.googleapis.com/database/disk/utilization": (SQL, set()),
    "cloudsql.googleapis.com/database/postgresql/num_backends": (SQL, set()),
    "storage.googleapis.com/storage/total_bytes": (STORAGE, set()),
    "monitoring.googleapis.com/uptime_check/check_passed": (UPTIME, {"check_id"}),
}
# User-defined log-based metrics are `logging.googleapis.com/user/NAME` (LOG_BASED).
USER_METRIC = re.compile(r"^logging\.googleapis\.com/user/\$\{google_logging_metric\.[\w-]+\.name\}$")
# https://cloud.google.com/monitoring/api/resources : monitored resource -> its labels used here.
DOCUMENTED_RESOURCES = {
    "cloud_run_revision": {"service_name"},
    "cloud_run_job": {"job_name"},
    "cloudsql_database": {"database_id"},
    "gcs_bucket": {"bucket_name"},
    "uptime_url": set(),
}
# https://cloud.google.com/sql/docs/postgres/backup-recovery/view-audit-logs-for-automated-backups
BACKUP_AUDIT_FILTER = (
    'logName="projects/{project}/logs/cloudaudit.googleapis.com%2Fsystem_event"',
    'protoPayload.methodName="cloudsql.instances.automatedBackup"',
    'resource.type="cloudsql_database"',
)
MONITORING_TYPES = (
    "google_monitoring_notification_channel",
    "google_monitoring_alert_policy",
    "google_monitoring_dashboard",
    "google_monitoring_uptime_check_config",
    "google_logging_metric",
)
POLICIES = {
    "server-5xx-ratio",
    "server-latency-p95",
    "server-saturated",
    "server-startup-failures",
    "migration-failed",
    "sql-cpu",
    "sql-disk",
    "sql-connections",
    "sql-backup-failed",
    "certificate-not-serving",
}


def policies(stack):
    return resources(stack, "google_monitoring_alert_policy")


def dashboard(stack):
    return json.loads(one(stack, "google_monitoring_dashboard")["dashboard_json"])


def every_filter(stack):
    """(where, filter) of every alert condition, ratio denominator and dashboard chart."""
    for path, policy in policies(stack).items():
        condition = policy["conditions"][0]["condition_threshold"]
        yield path, condition["filter"]
        if "denominator_filter" in condition:
            yield f"{path} (denominator)", condition["denominator_filter"]
    for tile in dashboard(stack)["mosaicLayout"]["tiles"]:
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            yield tile["widget"]["title"], data_set["timeSeriesQuery"]["timeSeriesFilter"]["filter"]


def undocumented(filter: str) -> list[str]:
    problems = []
    metrics = re.findall(r'metric\.type="([^"]+)"', filter)
    if len(metrics) != 1:
        return [f"names {len(metrics)} metric types"]
    metric = metrics[0]
    labels = set(re.findall(r"metric\.labels\.(\w+)=", filter))
    if USER_METRIC.match(metric):
        allowed = set()
    elif metric in DOCUMENTED_METRICS:
        allowed = DOCUMENTED_METRICS[metric][1]
    else:
        return [f"{metric} is not in DOCUMENTED_METRICS"]
    problems += [f"metric label {label} of {metric} is not documented" for label in labels - allowed]
    kinds = re.findall(r'resource\.type="([^"]+)"', filter)
    if len(kinds) != 1 or kinds[0] not in DOCUMENTED_RESOURCES:
        return [*problems, f"monitored resource {kinds} is not in DOCUMENTED_RESOURCES"]
    resource_labels = set(re.findall(r"resource\.labels\.(\w+)=", filter))
    problems += [
        f"resource label {label} of {kinds[0]} is not documented"
        for label in resource_labels - DOCUMENTED_RESOURCES[kinds[0]]
    ]
    return problems


def test_without_alerts_there_is_no_monitoring_at_all(app):
    for name in ("mlflow-example", "mlflow-example-project"):
        for type_ in MONITORING_TYPES:
            assert not resources(app.stacks[name], type_), f"{name} has {type_} without [alerts]"


def test_with_alerts_every_policy_channel_and_the_dashboard_are_synthesized(mlflow_prod):
    assert {path.split("/")[-1] for path in policies(mlflow_prod)} == POLICIES
    channels = resources(mlflow_prod, "google_monitoring_notification_channel")
    assert sorted(c["labels"]["email_address"] for c in channels.values()) == [
        "ml-platform-oncall@example.com",
        "sre@example.com",
    ]
    assert all(c["type"] == "email" for c in channels.values())
    assert len(dashboard(mlflow_prod)["mosaicLayout"]["tiles"]) == 8


def test_the_example_with_its_alerts_block_uncommented_synthesizes_them(tmp_path):
    """The README's way to turn alerts on: uncomment the block in config/example.toml."""
    text = re.sub(r"^# (\[alerts\]|[a-z_]+ = .*)$", r"\1", EXAMPLE_CONFIG.read_text(), flags=re.M)
    text = text.split("# [budget]")[0]
    stack = Synth([parse_config(text, "example.toml")], tmp_path).stacks["mlflow-example"]
    assert {path.split("/")[-1] for path in policies(stack)} == POLICIES
    assert one(stack, "google_monitoring_notification_channel")["labels"] == {
        "email_address": "ml-platform-oncall@example.com"
    }
    assert not resources(stack, "google_billing_budget")


def test_every_policy_explains_itself_and_notifies_every_channel(mlflow_prod):
    channel_ids = sorted(
        f"${{google_monitoring_notification_channel.{logical}.id}}"
        for logical in mlflow_prod["resource"]["google_monitoring_notification_channel"]
    )
    for path, policy in policies(mlflow_prod).items():
        doc = policy["documentation"]
        assert doc["mime_type"] == "text/markdown", path
        assert "**What it means.**" in doc["content"] and "**First thing to do.**" in doc["content"], path
        assert len(doc["content"]) < 8192 and doc["subject"] == policy["display_name"], path
        assert sorted(policy["notification_channels"]) == channel_ids, path
        assert policy["severity"] in ("ERROR", "WARNING"), path


def test_every_filter_names_only_documented_metrics_labels_and_resources(mlflow_prod):
    problems = [f"{where}: {p}" for where, filter in every_filter(mlflow_prod) for p in undocumented(filter)]
    assert not problems, "\n".join(problems)


def test_the_documented_metrics_check_catches_an_invented_metric():
    assert undocumented(
        'metric.type="run.googleapis.com/container/startup_failures" AND resource.type="cloud_run_revision"'
    ) == ["run.googleapis.com/container/startup_failures is not in DOCUMENTED_METRICS"]
    assert undocumented(
        'metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" AND metric.labels.code="500"'
    ) == ["metric label code of run.googleapis.com/request_count is not documented"]


def test_the_dashboard_shows_the_signals_the_alerts_watch(mlflow_prod):
    def metric_of(filter):
        return re.search(r'metric\.type="([^"]+)"', filter).group(1)

    charted = {
        metric_of(t["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]["filter"])
        for t in dashboard(mlflow_prod)["mosaicLayout"]["tiles"]
    }
    alerted = {metric_of(p["conditions"][0]["condition_threshold"]["filter"]) for p in policies(mlflow_prod).values()}
    events = {"run.googleapis.com/job/completed_execution_count", "monitoring.googleapis.com/uptime_check/check_passed"}
    assert {m for m in alerted if not USER_METRIC.match(m)} - events <= charted
    # Requests, latency, instances, memory; SQL CPU, disk, connections; artifact bucket size.
    assert charted == set(DOCUMENTED_METRICS) - events


def condition(stack, name):
    return policies(stack)[f"monitoring/{name}"]["conditions"][0]["condition_threshold"]


def test_thresholds_come_from_the_config(mlflow_prod, prod_config):
    # db-custom-2-7680 allows 400 connections; the alert fires at 80% of them.
    assert prod_config.database.max_connections == 400
    assert condition(mlflow_prod, "sql-connections")["threshold_value"] == 320
    assert condition(mlflow_prod, "server-saturated")["threshold_value"] == prod_config.server.max_instances
    assert condition(mlflow_prod, "server-saturated")["comparison"] == "COMPARISON_GE"
    assert condition(mlflow_prod, "server-latency-p95")["threshold_value"] == 3000  # overridden in the fixture
    assert condition(mlflow_prod, "server-5xx-ratio")["threshold_value"] == 0.05
    assert condition(mlflow_prod, "sql-cpu")["threshold_value"] == 0.8


def test_the_5xx_alert_is_a_ratio_of_the_services_requests(mlflow_prod):
    ratio = condition(mlflow_prod, "server-5xx-ratio")
    assert ratio["filter"] == ratio["denominator_filter"] + ' AND metric.labels.response_code_class="5xx"'
    assert ratio["aggregations"] == ratio["denominator_aggregations"]


def test_the_migration_alert_watches_failed_executions_of_the_job(mlflow_prod):
    watched = condition(mlflow_prod, "migration-failed")["filter"]
    assert 'resource.labels.job_name="${google_cloud_run_v2_job.migration-job_F6369E7C.name}"' in watched
    assert 'metric.labels.result="failed"' in watched


def test_a_failed_backup_is_found_with_googles_documented_audit_log_filter(mlflow_prod):
    metric = resources(mlflow_prod, "google_logging_metric")["monitoring/sql-backup-failures"]
    for expression in BACKUP_AUDIT_FILTER:
        assert expression.format(project="example-mlflow-prod") in metric["filter"]
    assert 'protoPayload.metadata.windowStatus:"FAILED"' in metric["filter"]
    logical = next(
        k for k, v in mlflow_prod["resource"]["google_logging_metric"].items() if v["name"] == metric["name"]
    )
    assert (
        f"logging.googleapis.com/user/${{google_logging_metric.{logical}.name}}"
        in condition(mlflow_prod, "sql-backup-failed")["filter"]
    )


def test_startup_probe_failures_are_counted_from_the_services_logs(mlflow_prod):
    metric = resources(mlflow_prod, "google_logging_metric")["monitoring/startup-probe-failures"]
    assert metric["filter"].startswith('resource.type="cloud_run_revision" AND resource.labels.service_name=')
    assert 'textPayload:"STARTUP" AND textPayload:"probe failed"' in metric["filter"]
    assert metric["metric_descriptor"] == {"metric_kind": "DELTA", "value_type": "INT64", "unit": "1"}


def test_the_certificate_is_checked_by_a_tls_validating_uptime_check_of_the_domain(mlflow_prod):
    check = one(mlflow_prod, "google_monitoring_uptime_check_config")
    assert check["monitored_resource"] == {
        "type": "uptime_url",
        "labels": {"project_id": "example-mlflow-prod", "host": "mlflow.prod.example.com"},
    }
    assert check["http_check"]["use_ssl"] is True and check["http_check"]["validate_ssl"] is True
    assert check["http_check"]["accepted_response_status_codes"] == [{"status_class": "STATUS_CLASS_ANY"}]
    watched = condition(mlflow_prod, "certificate-not-serving")
    logical = next(iter(mlflow_prod["resource"]["google_monitoring_uptime_check_config"]))
    assert (
        f'metric.labels.check_id="${{google_monitoring_uptime_check_config.{logical}.uptime_check_id}}"'
        in watched["filter"]
    )


def test_channels_are_keyed_by_address_so_adding_one_moves_nothing(prod_config, tmp_path):
    from tests.conftest import replace_config

    more = replace_config(prod_config, alerts={"emails": ("new@example.com", *prod_config.alerts.emails)})
    before = set(
        Synth([prod_config], tmp_path / "a").stacks["mlflow-prod"]["resource"]["google_monitoring_notification_channel"]
    )
    after = set(
        Synth([more], tmp_path / "b").stacks["mlflow-prod"]["resource"]["google_monitoring_notification_channel"]
    )
    assert before < after and len(after - before) == 1


THRESHOLDS = dict(error_ratio=0.05, latency_p95_ms=2000, max_instances=2, sql_cpu=0.8, sql_disk=0.8, sql_connections=20)


def props(**changes):
    base = dict(
        project="p",
        name="mlflow",
        emails=("a@example.com",),
        service_name="s",
        migration_job_name="j",
        sql_instance_name="db",
        artifact_bucket="b",
        thresholds=AlertThresholds(**THRESHOLDS),
    )
    return MonitoringProps(**{**base, **changes})


def test_monitoring_without_recipients_is_refused():
    with pytest.raises(ValueError, match="MonitoringProps.emails: is empty"):
        props(emails=())


@pytest.mark.parametrize("field, value", [("sql_cpu", 80), ("error_ratio", 0), ("sql_connections", 0)])
def test_thresholds_that_make_no_sense_are_refused(field, value):
    with pytest.raises(ValueError, match=f"AlertThresholds.{field}"):
        AlertThresholds(**{**THRESHOLDS, field: value})


def test_the_docs_list_every_alert_with_what_to_do(mlflow_prod, prod_config):
    # The alerts table is in the operations reference (docs/operations.md) the README links to.
    readme = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    rows = {line.split(" | ")[0].lstrip("| ") for line in readme.splitlines() if line.startswith("| MLflow ")}
    titles = {p["display_name"].replace(prod_config.domain, "DOMAIN") for p in policies(mlflow_prod).values()}
    assert titles == rows
