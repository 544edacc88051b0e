"""The google binding is loaded module by module, and still works when it was imported normally."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stacks.node import node_major

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys
{preload}
import stacks
from stacks.app import build_app
from stacks.config import load_configs
import tempfile
build_app(load_configs(""), tempfile.mkdtemp()).synth()
loaded = [m for m in sys.modules if m.startswith("cdktf_cdktf_provider_google.") and m.count(".") == 1]
print(len(loaded), "vertex_ai_index" in "".join(loaded))
"""


def run_probe(preload: str) -> tuple[int, bool]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(preload=preload)], cwd=REPO, capture_output=True, text=True, check=True
    )
    count, unrelated = result.stdout.split()
    return int(count), unrelated == "True"


def test_a_synth_loads_only_the_resource_modules_the_stacks_use():
    count, unrelated = run_probe("")
    assert not unrelated, "an unused resource module was imported: the package __init__ ran"
    assert 20 < count < 100, count


def test_an_already_imported_binding_is_used_as_it_is():
    count, unrelated = run_probe("import cdktf_cdktf_provider_google")
    assert unrelated and count > 1400


def test_the_node_end_of_life_banner_is_silenced(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSII_SILENCE")}
    env.update(MLFLOW_CONFIG="", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "main.py")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cdktf.out" / "stacks" / "bootstrap" / "cdk.tf.json").exists()
    assert "end-of-life" not in result.stdout + result.stderr


def test_the_banners_are_silenced_only_on_the_node_we_support():
    """On an end-of-life Node (20) jsii's banner stays: the silencing is no catch-all."""
    node20 = shutil.which("node")
    if node20 is None or node_major(node20) != "20":
        pytest.skip("no Node 20 on PATH to start jsii on")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JSII_")}
    env.update(JSII_NODE=node20)
    probe = "import stacks, constructs"  # importing constructs starts the jsii kernel, which prints the banner
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "end-of-life" in result.stderr
