"""Cloud Monitoring for the tracking server: e-mail channels, alert policies and one dashboard.

Every metric type below is one Google documents (tests/constructs/operations/test_monitoring.py lists each
with the page it comes from). Signals Cloud Monitoring has no built-in metric for — a failed
automated Cloud SQL backup, a container that never passes its startup probe — are log-based
metrics on the log entries Google documents for them; the managed certificate, which has no
metric at all, is watched by an HTTPS uptime check that validates the certificate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from constructs import Construct
from constructs.cdk.google.logging_metric import LoggingMetric, LoggingMetricMetricDescriptor
from constructs.cdk.google.monitoring_alert_policy import (
    MonitoringAlertPolicy,
    MonitoringAlertPolicyAlertStrategy,
    MonitoringAlertPolicyConditions,
    MonitoringAlertPolicyConditionsConditionThreshold,
    MonitoringAlertPolicyConditionsConditionThresholdAggregations,
    MonitoringAlertPolicyConditionsConditionThresholdDenominatorAggregations,
    MonitoringAlertPolicyDocumentation,
)
from constructs.cdk.google.monitoring_dashboard import MonitoringDashboard
from constructs.cdk.google.monitoring_notification_channel import MonitoringNotificationChannel
from constructs.cdk.google.monitoring_uptime_check_config import (
    MonitoringUptimeCheckConfig,
    MonitoringUptimeCheckConfigHttpCheck,
    MonitoringUptimeCheckConfigHttpCheckAcceptedResponseStatusCodes,
    MonitoringUptimeCheckConfigMonitoredResource,
)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class AlertThresholds:
    # Fraction of requests answered 5xx over 5 minutes.
    error_ratio: float
    # p95 request latency over 5 minutes, in milliseconds.
    latency_p95_ms: int
    # The service's max_instances: active instances at this number for 5 minutes is saturation.
    max_instances: int
    # Fractions (0-1] of the SQL instance's CPU and disk.
    sql_cpu: float
    sql_disk: float
    # PostgreSQL backends at which to warn; the stack derives it from the tier's max_connections.
    sql_connections: int

    def __post_init__(self) -> None:
        for name in ("error_ratio", "sql_cpu", "sql_disk"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"AlertThresholds.{name}: {getattr(self, name)} must be a fraction in (0, 1]")
        for name in ("latency_p95_ms", "max_instances", "sql_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"AlertThresholds.{name}: {getattr(self, name)} must be 1 or more")


@dataclass(frozen=True)
class MonitoringProps:
    project: str
    # Prefix of display and metric names, e.g. "mlflow".
    name: str
    # Who is notified; one e-mail channel each. Must not be empty: without recipients, build nothing.
    emails: tuple[str, ...]
    service_name: str
    migration_job_name: str
    sql_instance_name: str
    artifact_bucket: str
    thresholds: AlertThresholds
    # default: no certificate check. The front door's domain: an HTTPS uptime check validates the
    # Google-managed certificate that the load balancer serves for it.
    public_host: str | None = None

    def __post_init__(self) -> None:
        if not self.emails:
            raise ValueError("MonitoringProps.emails: is empty; without recipients the stack must not build monitoring")
        bad = [e for e in self.emails if not EMAIL.match(e)]
        if bad:
            raise ValueError(f"MonitoringProps.emails: {bad} are not e-mail addresses")
        if len(set(self.emails)) != len(self.emails):
            raise ValueError("MonitoringProps.emails: an address is listed twice")


@dataclass(frozen=True)
class _Filters:
    """Monitoring filters of the watched resources, shared by the policies and the dashboard."""

    service: str
    job: str
    sql: str
    bucket: str

    @classmethod
    def of(cls, props: MonitoringProps) -> _Filters:
        return cls(
            service=f'resource.type="cloud_run_revision" AND resource.labels.service_name="{props.service_name}"',
            job=f'resource.type="cloud_run_job" AND resource.labels.job_name="{props.migration_job_name}"',
            sql=f'resource.type="cloudsql_database" AND resource.labels.database_id="{props.project}:{props.sql_instance_name}"',
            bucket=f'resource.type="gcs_bucket" AND resource.labels.bucket_name="{props.artifact_bucket}"',
        )


def _channel_id(email: str) -> str:
    """Channels are keyed by address, so adding or removing one never moves the others."""
    return "email-" + re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")


class Monitoring(Construct):
    """Alert policies that each say what they mean and what to do first, and a dashboard of the same signals.

    Policies notify every channel and close themselves 30 minutes after the condition clears.
    """

    def __init__(self, scope: Construct, id: str, props: MonitoringProps) -> None:
        super().__init__(scope, id)
        self._props = props
        self._channels = [
            MonitoringNotificationChannel(
                self,
                _channel_id(email),
                project=props.project,
                display_name=f"{props.name} alerts: {email}",
                type="email",
                labels={"email_address": email},
            )
            for email in props.emails
        ]
        watched = _Filters.of(props)
        self._server_policies(watched.service)
        self._startup_policy(watched.service)
        self._migration_policy(watched.job)
        self._database_policies(watched.sql)
        self._backup_policy(watched.sql)
        if props.public_host is not None:
            self._certificate_check(props.public_host)
        self._dashboard(watched)

    def _server_policies(self, service: str) -> None:
        """The tracking server's requests: errors, latency, saturation."""
        t, p, name = self._props.thresholds, self._props.project, self._props.service_name
        requests = f'metric.type="run.googleapis.com/request_count" AND {service}'
        self._policy(
            "server-5xx-ratio",
            "MLflow server: 5xx responses",
            "ERROR",
            f"More than {t.error_ratio:.0%} of requests to the tracking server were answered with a 5xx for 5 minutes.",
            "Open the service's logs (`gcloud run services logs read "
            f"{name} --project={p}`) and look for tracebacks; a new revision that fails "
            "on every request is rolled back with `gcloud run services update-traffic --to-revisions=PREVIOUS=100`.",
            self._threshold(
                f'{requests} AND metric.labels.response_code_class="5xx"',
                "ALIGN_RATE",
                "REDUCE_SUM",
                t.error_ratio,
                denominator=requests,
            ),
        )
        self._policy(
            "server-latency-p95",
            "MLflow server: slow requests (p95)",
            "WARNING",
            f"The 95th percentile of request latency was above {t.latency_p95_ms} ms for 5 minutes.",
            "Check the dashboard: CPU-bound instances at max_instances mean raise `[server] max_instances`; "
            "high SQL CPU or connections mean the database is the bottleneck (a larger `[database] tier`).",
            self._threshold(
                f'metric.type="run.googleapis.com/request_latencies" AND {service}',
                "ALIGN_PERCENTILE_95",
                "REDUCE_MAX",
                t.latency_p95_ms,
            ),
        )
        self._policy(
            "server-saturated",
            "MLflow server: all instances busy",
            "WARNING",
            f"The service ran at its max_instances ({t.max_instances}) active instances for 5 minutes: new "
            "requests queue and may time out.",
            "If latency or 5xx alerts fire too, raise `[server] max_instances` — synth checks that the "
            "database still has connections for them — or move clients' bulk logging to batches.",
            self._threshold(
                f'metric.type="run.googleapis.com/container/instance_count" AND {service} '
                'AND metric.labels.state="active"',
                "ALIGN_MAX",
                "REDUCE_SUM",
                t.max_instances,
                comparison="COMPARISON_GE",
            ),
        )

    def _startup_policy(self, service: str) -> None:
        """Instances that never start: no built-in metric, so a log-based one on Cloud Run's probe lines."""
        props = self._props
        startup_failures = LoggingMetric(
            self,
            "startup-probe-failures",
            project=props.project,
            name=f"{props.name}-startup-probe-failures",
            description="Cloud Run log lines saying an instance of the tracking server failed its startup probe",
            # Cloud Run logs e.g. 'STARTUP HTTP probe failed 24 times consecutively for container "mlflow"
            # on port 8080 path "/health". The instance was not started.'
            filter=f'{service} AND textPayload:"STARTUP" AND textPayload:"probe failed"',
            metric_descriptor=LoggingMetricMetricDescriptor(metric_kind="DELTA", value_type="INT64", unit="1"),
        )
        self._policy(
            "server-startup-failures",
            "MLflow server: instances fail to start",
            "ERROR",
            "A new instance of the tracking server failed its startup probe (`/health` did not answer "
            "within the startup allowance), so it never served requests.",
            "Read the instance's first log lines: a database at an older schema (run the `migration_command` "
            "output), an unreadable secret or a bucket mount error are the usual causes.",
            self._threshold(
                f'metric.type="logging.googleapis.com/user/{startup_failures.name}" AND resource.type="cloud_run_revision"',
                "ALIGN_SUM",
                "REDUCE_SUM",
                0,
                duration="0s",
            ),
        )

    def _migration_policy(self, job: str) -> None:
        p, name = self._props.project, self._props.migration_job_name
        self._policy(
            "migration-failed",
            "MLflow migration job failed",
            "ERROR",
            f"An execution of the `{name}` job (`mlflow db upgrade`) failed, so the "
            "schema may not match the image the service runs.",
            f"Read the execution's logs (`gcloud run jobs executions list --job={name} "
            f"--project={p}`); do not roll out the new image until a run succeeds. Restore from the backup "
            "taken before the upgrade if the migration stopped half-way.",
            self._threshold(
                f'metric.type="run.googleapis.com/job/completed_execution_count" AND {job} '
                'AND metric.labels.result="failed"',
                "ALIGN_SUM",
                "REDUCE_SUM",
                0,
                duration="0s",
            ),
        )

    def _database_policies(self, sql: str) -> None:
        """The Cloud SQL instance's CPU, disk and connections."""
        t = self._props.thresholds
        self._policy(
            "sql-cpu",
            "MLflow database: CPU high",
            "WARNING",
            f"The Cloud SQL instance used more than {t.sql_cpu:.0%} of its CPU for 10 minutes.",
            "Open Query Insights for the instance to find the expensive queries; if the load is simply "
            "higher, move to a larger `[database] tier` (shared-core tiers are throttled).",
            self._threshold(
                f'metric.type="cloudsql.googleapis.com/database/cpu/utilization" AND {sql}',
                "ALIGN_MEAN",
                "REDUCE_MAX",
                t.sql_cpu,
                duration="600s",
            ),
        )
        self._policy(
            "sql-disk",
            "MLflow database: disk filling up",
            "WARNING",
            f"The Cloud SQL instance's disk is more than {t.sql_disk:.0%} full.",
            "The disk grows automatically, but each increase is permanent and billed: check for runaway "
            "metric logging, delete old runs (`mlflow gc`), and raise `[database] disk_size_gb` to match.",
            self._threshold(
                f'metric.type="cloudsql.googleapis.com/database/disk/utilization" AND {sql}',
                "ALIGN_MEAN",
                "REDUCE_MAX",
                t.sql_disk,
            ),
        )
        self._policy(
            "sql-connections",
            "MLflow database: connections near the limit",
            "WARNING",
            f"PostgreSQL had more than {t.sql_connections} backends for 5 minutes, close to the tier's "
            "max_connections; past it, new connections are refused and MLflow answers 500.",
            "Look for clients other than the server and the migration job (`SELECT usename, application_name, "
            "count(*) FROM pg_stat_activity GROUP BY 1, 2`); otherwise lower `[server] pool_size` or "
            "`max_instances`, or pick a larger `[database] tier`.",
            self._threshold(
                f'metric.type="cloudsql.googleapis.com/database/postgresql/num_backends" AND {sql}',
                "ALIGN_MAX",
                "REDUCE_SUM",
                t.sql_connections,
            ),
        )

    def _backup_policy(self, sql: str) -> None:
        """Failed automated backups: no built-in metric, so a log-based one on Cloud SQL's audit log."""
        p, props = self._props.project, self._props
        backup_failures = LoggingMetric(
            self,
            "sql-backup-failures",
            project=p,
            name=f"{props.name}-sql-backup-failures",
            description="System Event audit log entries of automated Cloud SQL backups whose window did not succeed",
            # The filter Google documents for automated backups' audit logs, narrowed to a failed or
            # overdue window status (`:` matches FAILED and OVERDUE whatever the enum's prefix).
            filter=(
                f'logName="projects/{p}/logs/cloudaudit.googleapis.com%2Fsystem_event" '
                f'AND protoPayload.methodName="cloudsql.instances.automatedBackup" '
                f"AND {sql} "
                f'AND (protoPayload.metadata.windowStatus:"FAILED" OR protoPayload.metadata.windowStatus:"OVERDUE")'
            ),
            metric_descriptor=LoggingMetricMetricDescriptor(metric_kind="DELTA", value_type="INT64", unit="1"),
        )
        self._policy(
            "sql-backup-failed",
            "MLflow database: automated backup failed",
            "ERROR",
            "Cloud SQL's audit log reports that the daily automated backup did not succeed in its window.",
            f"List the backups (`gcloud sql backups list --instance={props.sql_instance_name} --project={p}`), "
            "take one by hand (`gcloud sql backups create`), and read the operation's error "
            "(`gcloud sql operations list`).",
            self._threshold(
                f'metric.type="logging.googleapis.com/user/{backup_failures.name}" AND resource.type="cloudsql_database"',
                "ALIGN_SUM",
                "REDUCE_SUM",
                0,
                duration="0s",
            ),
        )

    @property
    def channel_ids(self) -> tuple[str, ...]:
        """The e-mail channels, for other notifiers (the billing budget) to reuse."""
        return tuple(c.id for c in self._channels)

    def _threshold(
        self,
        filter: str,
        aligner: str,
        reducer: str,
        value: float,
        *,
        comparison: str = "COMPARISON_GT",
        duration: str = "300s",
        denominator: str | None = None,
        period: str = "300s",
    ) -> MonitoringAlertPolicyConditionsConditionThreshold:
        aggregation = {"alignment_period": period, "per_series_aligner": aligner, "cross_series_reducer": reducer}
        return MonitoringAlertPolicyConditionsConditionThreshold(
            filter=filter,
            comparison=comparison,
            threshold_value=value,
            duration=duration,
            aggregations=[MonitoringAlertPolicyConditionsConditionThresholdAggregations(**aggregation)],
            denominator_filter=denominator,
            denominator_aggregations=(
                [MonitoringAlertPolicyConditionsConditionThresholdDenominatorAggregations(**aggregation)]
                if denominator
                else None
            ),
            # No data (no traffic, no backup yet) is not a problem by itself.
            evaluation_missing_data="EVALUATION_MISSING_DATA_INACTIVE",
        )

    def _policy(
        self,
        id: str,
        title: str,
        severity: str,
        meaning: str,
        first_step: str,
        condition: MonitoringAlertPolicyConditionsConditionThreshold,
    ) -> None:
        MonitoringAlertPolicy(
            self,
            id,
            project=self._props.project,
            display_name=title,
            combiner="OR",
            severity=severity,
            conditions=[MonitoringAlertPolicyConditions(display_name=title, condition_threshold=condition)],
            notification_channels=[c.id for c in self._channels],
            alert_strategy=MonitoringAlertPolicyAlertStrategy(auto_close="1800s"),
            documentation=MonitoringAlertPolicyDocumentation(
                subject=title,
                mime_type="text/markdown",
                content=f"**What it means.** {meaning}\n\n**First thing to do.** {first_step}",
            ),
        )

    def _certificate_check(self, host: str) -> None:
        """No metric reports a compute managed certificate's status; a TLS-validating check of the
        domain fails while the certificate is not ACTIVE (or has lapsed), whatever IAP answers."""
        p = self._props.project
        check = MonitoringUptimeCheckConfig(
            self,
            "https-uptime-check",
            project=p,
            display_name=f"{self._props.name} https://{host}",
            timeout="10s",
            period="300s",
            http_check=MonitoringUptimeCheckConfigHttpCheck(
                path="/health",
                port=443,
                use_ssl=True,
                validate_ssl=True,
                request_method="GET",
                # IAP answers an anonymous request with a redirect to sign in: any answer over a valid
                # certificate is a pass; only TLS and connection failures fail the check.
                accepted_response_status_codes=[
                    MonitoringUptimeCheckConfigHttpCheckAcceptedResponseStatusCodes(status_class="STATUS_CLASS_ANY")
                ],
            ),
            monitored_resource=MonitoringUptimeCheckConfigMonitoredResource(
                type="uptime_url", labels={"project_id": p, "host": host}
            ),
        )
        self._policy(
            "certificate-not-serving",
            f"MLflow front door: HTTPS failing for {host}",
            "ERROR",
            f"Uptime checks could not complete a TLS handshake with a valid certificate for https://{host} "
            "from more than one location for 10 minutes: the Google-managed certificate is not ACTIVE, "
            "or the load balancer does not answer.",
            "`gcloud compute ssl-certificates list --filter='name~cert' --format='value(name,managed.status,"
            f"managed.domainStatus)'`: PROVISIONING or FAILED_NOT_VISIBLE means {host} does not resolve to the "
            "`static_ip` output yet (check the NS/DS delegation). Expected for up to an hour after the first deploy.",
            self._threshold(
                f'metric.type="monitoring.googleapis.com/uptime_check/check_passed" AND resource.type="uptime_url" '
                f'AND metric.labels.check_id="{check.uptime_check_id}"',
                "ALIGN_NEXT_OLDER",
                "REDUCE_COUNT_FALSE",
                1,
                duration="600s",
                period="1200s",
            ),
        )

    def _dashboard(self, watched: _Filters) -> None:
        tiles = [_tile(index, chart) for index, chart in enumerate(_charts(watched, self._props.thresholds))]
        MonitoringDashboard(
            self,
            "dashboard",
            project=self._props.project,
            dashboard_json=json.dumps(
                {
                    "displayName": f"{self._props.name}: MLflow tracking server",
                    "mosaicLayout": {"columns": 12, "tiles": tiles},
                }
            ),
        )


@dataclass(frozen=True)
class _Chart:
    title: str
    metric: str
    # The resource filter the metric is read from.
    resource: str
    aligner: str
    reducer: str
    group_by: tuple[str, ...] = ()
    # The alert's threshold, drawn on the chart.
    threshold: float | None = None


def _charts(watched: _Filters, t: AlertThresholds) -> list[_Chart]:
    """The dashboard: the service's traffic and instances, then the database and the bucket."""
    service, sql = watched.service, watched.sql
    return [
        _Chart("Requests by response class (per second)", "run.googleapis.com/request_count", service,
               "ALIGN_RATE", "REDUCE_SUM", ('metric.label."response_code_class"',)),
        _Chart("Request latency p95 (ms)", "run.googleapis.com/request_latencies", service,
               "ALIGN_PERCENTILE_95", "REDUCE_MAX", threshold=t.latency_p95_ms),
        _Chart("Instances by state", "run.googleapis.com/container/instance_count", service,
               "ALIGN_MAX", "REDUCE_SUM", ('metric.label."state"',), t.max_instances),
        _Chart("Container memory utilisation p95", "run.googleapis.com/container/memory/utilizations", service,
               "ALIGN_PERCENTILE_95", "REDUCE_MAX"),
        _Chart("Cloud SQL CPU utilisation", "cloudsql.googleapis.com/database/cpu/utilization", sql,
               "ALIGN_MEAN", "REDUCE_MAX", threshold=t.sql_cpu),
        _Chart("Cloud SQL disk utilisation", "cloudsql.googleapis.com/database/disk/utilization", sql,
               "ALIGN_MEAN", "REDUCE_MAX", threshold=t.sql_disk),
        _Chart("PostgreSQL connections (backends)", "cloudsql.googleapis.com/database/postgresql/num_backends", sql,
               "ALIGN_MAX", "REDUCE_SUM", threshold=t.sql_connections),
        _Chart("Artifact bucket size (bytes)", "storage.googleapis.com/storage/total_bytes", watched.bucket,
               "ALIGN_MEAN", "REDUCE_SUM"),
    ]  # fmt: skip


def _tile(index: int, chart: _Chart) -> dict[str, Any]:
    """One line chart in a two-column grid, 6 by 4 each."""
    aggregation: dict[str, Any] = {
        "alignmentPeriod": "60s",
        "perSeriesAligner": chart.aligner,
        "crossSeriesReducer": chart.reducer,
    }
    if chart.group_by:
        aggregation["groupByFields"] = list(chart.group_by)
    query = {
        "timeSeriesFilter": {"filter": f'metric.type="{chart.metric}" AND {chart.resource}', "aggregation": aggregation}
    }
    xy_chart: dict[str, Any] = {"dataSets": [{"plotType": "LINE", "timeSeriesQuery": query}]}
    if chart.threshold is not None:
        xy_chart["thresholds"] = [{"value": chart.threshold, "label": "alert"}]
    return {
        "xPos": 6 * (index % 2),
        "yPos": 4 * (index // 2),
        "width": 6,
        "height": 4,
        "widget": {"title": chart.title, "xyChart": xy_chart},
    }
