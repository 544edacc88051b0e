"""Log a test run (params, metrics, an artifact) to the IAP-protected MLflow server.

Nothing here knows about IAP: with mlflow-iap-auth installed and switched on, the normal MLflow
client adds the IAP token to every request to the tracking server by itself.

    pip install "git+https://github.com/OWNER/REPO#subdirectory=client"   # or: pip install ./client
    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_AUTH=iap
    # on a workstation (on GCE, Cloud Run or GKE the attached service account is used instead):
    gcloud auth application-default login
    export MLFLOW_IAP_SERVICE_ACCOUNTS='<client_service_accounts output, JSON>'   # picks your own
    python client/examples/log_run.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mlflow_iap_auth import IapAuthError, check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="iap-smoke-test", help="experiment name (created if missing)")
    parser.add_argument("--steps", type=int, default=5, help="metric steps to log")
    parser.add_argument(
        "--sleep", type=float, default=0.0, help="seconds between steps (longer than a token lifetime shows refresh)"
    )
    args = parser.parse_args(argv)
    try:
        # MLflow itself would retry for minutes before DNS resolves, and send requests without a token.
        check()
    except IapAuthError as error:
        sys.exit(str(error))
    import mlflow  # after the check: importing MLflow alone takes seconds

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="iap-smoke-test") as run:
        mlflow.log_params({"learning_rate": 0.01, "epochs": args.steps, "optimizer": "sgd"})
        for step in range(args.steps):
            if step and args.sleep:
                time.sleep(args.sleep)
            mlflow.log_metric("loss", round(1.0 / (step + 1), 6), step=step)
            mlflow.log_metric("accuracy", round(1.0 - 0.5 / (step + 1), 6), step=step)
        with tempfile.TemporaryDirectory() as tmp:
            artifact = Path(tmp) / "hello.txt"
            artifact.write_text("Hello from a keyless MLflow client behind IAP!\n")
            mlflow.log_artifact(str(artifact))
    print(f"experiment_id={run.info.experiment_id}")
    print(f"run_id={run.info.run_id}")


if __name__ == "__main__":
    main()
