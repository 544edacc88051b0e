"""Start an environment: `python -m stacks.init prod --project acme-ml --region us-central1 --domain mlflow.acme.com`.

Writes config/<environment>.toml from the example, with this environment's own values in place of the
example's placeholders, validated by the same model as a synth before anything is written. The project
number comes from --project-number, else from `gcloud` when it is installed, else it is asked for on a
terminal: a copied number would grant another project's IAP service agent.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from stacks.config import CONFIG_ENV_VAR, EXAMPLE_CONFIG, EXAMPLE_ENVIRONMENT, REPO_ROOT, ConfigError, parse_config

NUMBER_COMMAND = "gcloud projects describe {project} --format=value(projectNumber)"


def project_number(project: str, ask: bool) -> str:
    """The number `gcloud` reports for `project`, or the one the user types; "" when neither can be had."""
    if shutil.which("gcloud"):
        done = subprocess.run(NUMBER_COMMAND.format(project=project).split(), capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
        print(f"gcloud could not describe {project}: {(done.stderr.strip().splitlines() or [''])[-1]}", file=sys.stderr)
    return input(f"project number of {project} (`{NUMBER_COMMAND.format(project=project)}`): ").strip() if ask else ""


def environment_toml(args: argparse.Namespace, number: str) -> str:
    """The example with this environment's values on its lines, comments and optional blocks kept."""
    text = EXAMPLE_CONFIG.read_text()
    header = text[text.index("\n") + 1 : text.index("environment = ")]
    started = f"# The {args.environment} environment, started with `python -m stacks.init` (README: Configuration).\n\n"
    text = text.replace(header, started)
    values = {
        "environment": args.environment,
        "project_id": args.project,
        "project_number": number,
        "region": args.region,
        "domain": args.domain,
        "iap_members": args.member,
        "bucket": args.state_bucket or f"{args.project}-tfstate",
    }
    for key, value in values.items():
        literal = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
        text = re.sub(rf"^{key} = .*$", lambda _: f"{key} = {literal}", text, count=1, flags=re.M)  # noqa: B023 (called now)
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stacks.init", description=__doc__.split("\n\n")[0])
    p.add_argument("environment", help="1-10 lowercase letters/digits, e.g. prod")
    p.add_argument("--project", required=True, help="the Google Cloud project id")
    p.add_argument("--region", required=True, help="a Google Cloud region, e.g. europe-west1")
    p.add_argument("--domain", required=True, help="the hostname users will open, e.g. mlflow.acme.com")
    p.add_argument("--member", action="append", required=True, help="who may use MLflow, e.g. group:ml@acme.com (repeat)")
    p.add_argument("--project-number", default="", help="default: from gcloud, else asked on a terminal")
    p.add_argument("--state-bucket", default="", help="default: PROJECT-tfstate; one bucket for all environments")
    p.add_argument("--config-dir", type=Path, default=REPO_ROOT / "config", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = args.config_dir / f"{args.environment}.toml"
    number = args.project_number or project_number(args.project, ask=sys.stdin.isatty())
    problems = []
    if not number:
        problems.append(
            "project_number: unknown (no gcloud here, no terminal to ask on); pass --project-number with the digits "
            f"`{NUMBER_COMMAND.format(project=args.project)}` prints"
        )
    if args.environment == EXAMPLE_ENVIRONMENT:
        problems.append(f"environment: {EXAMPLE_ENVIRONMENT!r} is the embedded example's; name this one, e.g. \"prod\"")
    if path.exists() and not args.force:
        problems.append(f"{path}: exists; edit it, or pass --force to start it again")
    text = environment_toml(args, number)
    try:
        # Without a number, the rest is still checked (with a well-formed stand-in), so every problem shows at once.
        parse_config(text if number else environment_toml(args, "1" * 12), path.name)
    except ConfigError as error:
        problems.append(str(error))
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 2
    path.write_text(text)
    print(f"wrote {path}; synthesize it with {CONFIG_ENV_VAR}={path} npx cdktf synth", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
