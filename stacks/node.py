"""Which Node jsii starts, settled before anything imports `constructs` (whose import starts it).

jsii's Python runtime starts `$JSII_NODE`, else `node` on PATH. package.json pins Node 22 as a
devDependency (the npm package `node` ships the binary) and `npx` puts it first on PATH for the CLI;
this makes `python main.py`, `pipenv run pytest` and the bench use it too. Every entry point imports
`stacks` first (main.py and tests/conftest.py through `stacks.config`), so this runs in `stacks/__init__`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
PROJECT_NODE = NODE_MODULES / ".bin" / "node"
# Node 20 is past its end of life; cdktn-cli needs >= 22.19 (docs/toolchain.md).
SUPPORTED_NODE_MAJORS = ("22", "24")


def node_major(node: str) -> str:
    if Path(node) == PROJECT_NODE:  # its version without starting it (every synth and test imports this)
        try:
            return json.loads((NODE_MODULES / "node" / "package.json").read_text())["version"].split(".")[0]
        except (OSError, ValueError, KeyError):
            pass
    try:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return ""
    return version.strip().lstrip("v").split(".")[0]


def use_supported_node() -> None:
    """Prefer the project's Node; silence jsii's banners only on the Node majors we support.

    jsii prints a page-wide banner when Node is deprecated or past its end of life (see
    `bin__jsii-runtime.js` in jsii's package). Its end-of-life switch is a list of majors; its
    deprecation switch is a plain flag, so it is set only when the Node jsii starts is one we support.
    On any other Node the banners stay: they are true.
    """
    if "JSII_NODE" not in os.environ and PROJECT_NODE.exists():
        os.environ["JSII_NODE"] = str(PROJECT_NODE)
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", ",".join(SUPPORTED_NODE_MAJORS))
    if node_major(os.environ.get("JSII_NODE", "node")) in SUPPORTED_NODE_MAJORS:
        os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
