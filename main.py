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


def what_is_built(selection: str, configs: list, config_dir: Path | None = None) -> list[str]:
    """One line naming each file built and its stacks; a warning when the embedded example was built by
    default while environments of one's own sit in config/ (a new shell without MLFLOW_CONFIG). On
    stdout: the cdktf CLI shows an app's stdout, not its stderr, when synth succeeds."""
    from stacks.config import CONFIG_ENV_VAR, EXAMPLE_CONFIG, SHIPPED_CONFIGS

    paths = [p.strip() for p in selection.split(",") if p.strip()] or [
        str(EXAMPLE_CONFIG.relative_to(EXAMPLE_CONFIG.parent.parent))
    ]
    lines = [
        f"synth: {path} (environment {cfg.environment}: stacks mlflow-{cfg.environment}-project, mlflow-{cfg.environment})"
        for path, cfg in zip(paths, configs, strict=True)
    ]
    if not selection.strip():
        config_dir = config_dir or EXAMPLE_CONFIG.parent
        own = sorted(f"config/{f.name}" for f in config_dir.glob("*.toml") if f.name not in SHIPPED_CONFIGS)
        if own:
            lines.append(
                f"warning: {CONFIG_ENV_VAR} is not set, so this is the embedded example, not {', '.join(own)}; "
                f"export {CONFIG_ENV_VAR}={','.join(own)} to build yours"
            )
    return lines


def main() -> int:
    from stacks.config import CONFIG_ENV_VAR, ConfigError, load_configs

    try:
        configs = load_configs()
    except ConfigError as error:
        removed = remove_stale_output()
        lines = [f"error: {line}" for line in error.problems]
        if removed:
            lines.append(f"error: removed the previous {removed}: it no longer matches this configuration")
        print("\n".join(lines), file=sys.stderr)
        return 2
    print("\n".join(what_is_built(os.environ.get(CONFIG_ENV_VAR, ""), configs)), flush=True)
    from stacks.app import build_app

    build_app(configs).synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
