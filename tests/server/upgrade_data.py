"""Run by the upgrade test under two MLflows, against a tracking server (MLFLOW_TRACKING_URI):

    python upgrade_data.py populate OUT.json   log a bit of everything, then write what `snapshot` reads
    python upgrade_data.py snapshot OUT.json   everything readable through MLflow's client, as JSON

Only the public client API, so the same file works with the older MLflow and the image's. Artifacts
are compared by SHA-256 of what the server hands back; times and ids are the stored ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

EXPERIMENTS = ("upgrade-a", "upgrade-b")
MODEL = "upgrade-model"


def populate() -> None:
    client = MlflowClient()
    scratch = Path(tempfile.mkdtemp(prefix="upgrade-data-"))
    for index, name in enumerate(EXPERIMENTS):
        experiment_id = client.create_experiment(name, tags={"team": "ml", "index": str(index)})
        mlflow.set_experiment(experiment_id=experiment_id)
        with mlflow.start_run(run_name=f"parent-{index}", tags={"kind": "parent"}) as parent:
            mlflow.log_params({"lr": "0.01", "layers": str(3 + index)})
            for step in range(25):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_000_000 + step)
            for child in range(2):
                with mlflow.start_run(run_name=f"child-{index}-{child}", nested=True):
                    mlflow.log_param("seed", str(child))
                    mlflow.log_metric("accuracy", 0.5 + child / 10, step=0)
                    mlflow.log_metric("accuracy", 0.6 + child / 10, step=1)
                    mlflow.set_tag("child", str(child))
            model_dir = scratch / f"model-{index}"
            model_dir.mkdir()
            (model_dir / "weights.bin").write_bytes(os.urandom(300_000 + index))
            (model_dir / "MLmodel").write_text(f"flavors: {{}}\nrun_id: {parent.info.run_id}\n")
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
            mlflow.log_text("hello\n" * 100, "notes/readme.txt")
            mlflow.log_dict({"a": [1, 2, 3]}, "config.json")
            if index == 0:
                with mlflow.start_span(name="predict") as span:
                    span.set_inputs({"x": [1, 2]})
                    span.set_attribute("model", MODEL)
                    with mlflow.start_span(name="preprocess") as inner:
                        inner.set_inputs({"raw": "1,2"})
                        inner.set_outputs({"clean": [1, 2]})
                    span.set_outputs({"y": 3})
                trace_id = mlflow.get_last_active_trace_id()
                client.set_trace_tag(trace_id, "reviewed", "yes")
    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush:
        flush()

    client.create_registered_model(MODEL, tags={"stage": "test"}, description="upgraded")
    runs = client.search_runs(
        [client.get_experiment_by_name(n).experiment_id for n in EXPERIMENTS], filter_string="tags.kind = 'parent'"
    )
    for version, run in enumerate(sorted(runs, key=lambda r: r.info.run_name), start=1):
        client.create_model_version(
            MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={"v": str(version)},
            description=f"version {version}",
        )  # fmt: skip
    client.set_registered_model_alias(MODEL, "champion", "2")


def sha256_tree(client: MlflowClient, run_id: str) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as out:
        root = Path(client.download_artifacts(run_id, "", out))
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }


def snapshot() -> dict:
    client = MlflowClient()
    experiments, traces = [], []
    for name in EXPERIMENTS:
        e = client.get_experiment_by_name(name)
        runs = []
        for r in sorted(client.search_runs([e.experiment_id]), key=lambda r: r.info.run_name):
            runs.append({
                "info": {k: getattr(r.info, k) for k in (
                    "run_id", "run_name", "status", "start_time", "end_time", "artifact_uri", "lifecycle_stage"
                )},
                "params": r.data.params,
                "tags": r.data.tags,
                "latest_metrics": r.data.metrics,
                "metric_history": {
                    key: [(m.step, m.timestamp, m.value) for m in client.get_metric_history(r.info.run_id, key)]
                    for key in sorted(r.data.metrics)
                },
                "artifacts": sha256_tree(client, r.info.run_id),
            })  # fmt: skip
        experiments.append({
            "experiment_id": e.experiment_id, "name": e.name, "tags": e.tags,
            "artifact_location": e.artifact_location, "lifecycle_stage": e.lifecycle_stage, "runs": runs,
        })  # fmt: skip
        for t in client.search_traces(experiment_ids=[e.experiment_id]):
            trace = client.get_trace(t.info.trace_id)
            traces.append({
                "trace_id": trace.info.trace_id,
                "state": str(trace.info.state),
                "request_time": trace.info.request_time,
                "execution_duration": trace.info.execution_duration,
                "tags": dict(trace.info.tags),
                "spans": sorted(
                    (s.name, s.span_id, s.parent_id, json.dumps(s.inputs), json.dumps(s.outputs), s.start_time_ns,
                     s.end_time_ns, s.get_attribute("model"))
                    for s in trace.data.spans
                ),
            })  # fmt: skip
    model = client.get_registered_model(MODEL)
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    return {
        "experiments": experiments,
        "traces": traces,
        "model": {
            "name": model.name,
            "description": model.description,
            "tags": model.tags,
            "aliases": model.aliases,
            "creation_timestamp": model.creation_timestamp,
            "champion": client.get_model_version_by_alias(MODEL, "champion").version,
            "versions": [
                {
                    k: getattr(v, k)
                    for k in ("version", "source", "run_id", "status", "description", "tags", "creation_timestamp")
                }
                for v in versions
            ],
        },
    }


if __name__ == "__main__":
    mode, out = sys.argv[1:]
    if mode == "populate":
        populate()
    Path(out).write_text(json.dumps(snapshot(), indent=1, sort_keys=True, default=str))
