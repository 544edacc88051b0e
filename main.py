"""Entry point of `cdktf synth`: validate the configuration first, so bad input writes nothing.

Only `stacks.config` (pydantic, no CDK runtime, no Node) is imported before the configuration is
accepted, so a refusal is instant. A refused configuration also removes the previous synth output:
Terraform from another configuration must not look current.
"""

import os
import shutil
import sys
from pathlib import Path


def remove_stale_output() -> str:
    """The synth output the CLI (CDKTF_OUTDIR) or a plain run would write, removed if it is one; its name or ""."""
    outdir = Path(os.environ.get("CDKTF_OUTDIR") or "cdktf.out")
    if not (outdir / "manifest.json").is_file():
        return ""
    shutil.rmtree(outdir)
    return str(outdir)


def main() -> int:
    from stacks.config import ConfigError, load_configs

    try:
        configs = load_configs()
    except ConfigError as error:
        removed = remove_stale_output()
        print(f"error: {error}" + (f" (removed the previous {removed}: it no longer matches)" if removed else ""), file=sys.stderr)
        return 2
    from stacks.app import build_app

    build_app(configs).synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
