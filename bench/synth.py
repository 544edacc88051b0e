"""Synth time of the full app on each CDK runtime vs a stock minimal cdktf app (google binding imported normally),
and the time to refuse a bad configuration vs a full synth.

All run in fresh interpreters on the same Node, interleaved, in the same run; the ratios are what count
(targets: both runtimes <= 0.40x the stock minimal app; a refusal under 0.5 s and <= 0.15x a full synth).
Usage: pipenv run python bench/synth.py [rounds]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stacks  # noqa: F401  (settles JSII_NODE, inherited by every run below, the stock app too)

REPO = Path(__file__).resolve().parent.parent

STOCK_MINIMAL_APP = """
from cdktf import App, TerraformStack
from cdktf_cdktf_provider_google.provider import GoogleProvider
from cdktf_cdktf_provider_google.storage_bucket import StorageBucket
import sys
app = App(outdir=sys.argv[1])
stack = TerraformStack(app, "minimal")
GoogleProvider(stack, "google", project="example-project")
StorageBucket(stack, "bucket", name="example-bucket", location="EU")
app.synth()
"""

RUNTIMES = ("cdktf", "cdktn")


# The example with a typo'd key and a region that does not exist: refused with exit 2.
BAD_CONFIG = (
    (REPO / "config" / "example.toml")
    .read_text()
    .replace('region = "europe-west1"', 'region = "europe-west99"')
    .replace("[server]\n", "[server]\nmin_instance = 1\n")
)


def timed(args: list[str], runtime: str = "cdktf", config: str = "", status: int = 0) -> float:
    """Seconds for one synth (or refusal) in a fresh interpreter, writing into a throw-away directory."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            capture_output=True,
            env={**os.environ, "MLFLOW_CONFIG": config, "PYTHONPATH": str(REPO), "CDK_RUNTIME": runtime},
        )
        elapsed = time.perf_counter() - start
        assert done.returncode == status, done.stderr
        return elapsed


def runtimes_vs_stock(rounds: int) -> None:
    """The full app (3 stacks, lazy bindings) on cdktf and on CDK Terrain against the stock minimal app."""
    stock, full = [], {runtime: [] for runtime in RUNTIMES}
    for _ in range(rounds):
        stock.append(timed(["-c", STOCK_MINIMAL_APP, "cdktf.out"]))
        for runtime in RUNTIMES:
            full[runtime].append(timed([str(REPO / "main.py")], runtime))
    s = statistics.median(stock)
    print(f"node for jsii: {os.environ.get('JSII_NODE', 'node on PATH')}")
    print(
        f"stock minimal cdktf app (1 bucket, binding imported normally): median {s:.2f} s  runs {[round(x, 2) for x in stock]}"
    )
    for runtime, runs in full.items():
        f = statistics.median(runs)
        print(
            f"full app on {runtime} (3 stacks, lazy binding), {rounds} rounds: median {f:.2f} s  runs {[round(x, 2) for x in runs]}"
        )
        print(f"ratio full {runtime}/stock: {f / s:.2f}  (target <= 0.40)")


def refusal_vs_synth(rounds: int) -> None:
    """`python main.py` on a bad configuration (exit 2, nothing written) against a full synth of the example."""
    refusal, full = [], []
    with tempfile.TemporaryDirectory() as folder:
        bad = Path(folder) / "bad.toml"
        bad.write_text(BAD_CONFIG)
        for _ in range(rounds):
            refusal.append(timed([str(REPO / "main.py")], config=str(bad), status=2))
            full.append(timed([str(REPO / "main.py")]))
    r, f = statistics.median(refusal), statistics.median(full)
    print(
        f"refusing a bad config (main.py, exit 2), {rounds} rounds: median {r:.2f} s  runs {[round(x, 2) for x in refusal]}"
    )
    print(
        f"full synth of the example (main.py, cdktf), {rounds} rounds: median {f:.2f} s  runs {[round(x, 2) for x in full]}"
    )
    print(f"ratio refusal/full synth: {r / f:.2f}  (target <= 0.15, and the refusal under 0.5 s)")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runtimes_vs_stock(rounds)
    refusal_vs_synth(rounds)


if __name__ == "__main__":
    main()
