"""Synth time of the full app vs a stock minimal cdktf app that imports the google binding normally.

Both run in fresh interpreters, interleaved, in the same run; the ratio is what counts (target <= 0.5).
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

def timed(args: list[str]) -> float:
    """Seconds for one synth in a fresh interpreter, writing into a throw-away directory."""
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *args], cwd=cwd, check=True, capture_output=True,
            env={**os.environ, "MLFLOW_CONFIG": "", "PYTHONPATH": str(REPO)},
        )
        return time.perf_counter() - start


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    full, stock = [], []
    for _ in range(rounds):
        stock.append(timed(["-c", STOCK_MINIMAL_APP, "cdktf.out"]))
        full.append(timed([str(REPO / "main.py")]))
    f, s = statistics.median(full), statistics.median(stock)
    print(f"stock minimal app (1 bucket, binding imported normally): median {s:.2f} s  runs {[round(x, 2) for x in stock]}")
    print(f"full app (3 stacks, lazy binding), {rounds} rounds:            median {f:.2f} s  runs {[round(x, 2) for x in full]}")
    print(f"ratio full/stock: {f / s:.2f}  (target <= 0.50)")


if __name__ == "__main__":
    main()
