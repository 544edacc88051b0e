"""Start an environment: config/<environment>.toml with its own project, region, domain and members.

Writes config/<environment>.toml from the example, with this environment's own values in place of the
example's placeholders, validated by the same model as a synth before anything is written. The project
number comes from --project-number, else from `gcloud` when it is installed, else it is asked for on a
terminal: a copied number would grant another project's IAP service agent.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from stacks.config import (
    CONFIG_ENV_VAR,
    EXAMPLE_CONFIG,
    EXAMPLE_ENVIRONMENT,
    FRONT_DOOR_MODES,
    REPO_ROOT,
    ConfigError,
    parse_config,
    run_app_host,
)

EXAMPLE = (
    "python -m stacks.init prod --project acme-ml --region europe-west1 --domain mlflow.acme.com \\\n"
    "    --member group:ml-team@acme.com --client-impersonator user:ana@acme.com\n"
    "  python -m stacks.init small --project acme-ml --region europe-west1 --front-door direct_iap \\\n"
    "    --member group:ml-team@acme.com    # domain: the service's run.app host, derived"
)
STAND_IN_NUMBER = "1" * 12


def number_command(project: str) -> list[str]:
    return ["gcloud", "projects", "describe", project, "--format=value(projectNumber)"]


def project_number(project: str, ask: bool) -> tuple[str, str]:
    """(the number gcloud reports for `project` or the user types, "") or ("", why neither could be had)."""
    command = shlex.join(number_command(project))
    why = "gcloud is not installed"
    if shutil.which("gcloud"):
        try:
            done = subprocess.run(number_command(project), capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess([], 1, "", "ERROR: no answer within 60 s")
        if done.returncode == 0 and done.stdout.strip().isdigit():
            return done.stdout.strip(), ""
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        error = next((line for line in said if line.startswith("ERROR")), said[0] if said else "no output")
        why = f"`{command}` failed ({error[:160]}; signed in? `gcloud auth login`)"
    if ask:
        return input(f"project number of {project} (`{command}`): ").strip(), ""
    return "", why


def environment_toml(args: argparse.Namespace, number: str) -> str:
    """The example with this environment's values on its lines, comments and optional blocks kept."""
    text = EXAMPLE_CONFIG.read_text()
    header = text[text.index("\n") + 1 : text.index("environment = ")]
    started = f"# The {args.environment} environment, started with `python -m stacks.init` (docs/configuration.md).\n\n"
    text = text.replace(header, started)
    values = {
        "environment": args.environment,
        "project_id": args.project,
        "project_number": number,
        "region": args.region,
        "domain": domain(args, number),
        "iap_members": args.member,
        "bucket": args.state_bucket or f"{args.project}-tfstate",
    }
    for key, value in values.items():
        text = re.sub(rf"^{key} = .*$", lambda _: f"{key} = {toml_literal(value)}", text, count=1, flags=re.M)  # noqa: B023 (called now)
    if args.client_impersonator:
        text = text.replace(
            "\n[state]\n", f"client_impersonators = {toml_literal(args.client_impersonator)}\n\n[state]\n", 1
        )
    if args.front_door != "load_balancer":
        text = text.replace("\n[network]\n", f'\n[front_door]\nmode = "{args.front_door}"\n\n[network]\n', 1)
    return text


def toml_literal(value: str | list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'


def domain(args: argparse.Namespace, number: str) -> str:
    """direct_iap: the run.app host Cloud Run gives the server (the example's name prefix), known from the number."""
    if args.front_door == "direct_iap" and not args.domain:
        return run_app_host("mlflow-server", number, args.region)
    return args.domain


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stacks.init",
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n  " + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("environment", help="1-10 lowercase letters/digits, e.g. prod")
    p.add_argument("--project", required=True, help="the Google Cloud project id")
    p.add_argument("--region", required=True, help="a Google Cloud region, e.g. europe-west1")
    p.add_argument(
        "--domain",
        default="",
        help="the hostname users will open, e.g. mlflow.acme.com; "
        "with --front-door direct_iap: derived (the service's run.app host)",
    )
    p.add_argument(
        "--member", action="append", required=True, help="who may use MLflow, e.g. group:ml@acme.com (repeat)"
    )
    p.add_argument(
        "--client-impersonator",
        action="append",
        default=[],
        metavar="MEMBER",
        help="whose scripts reach MLflow, each through a keyless client account of its own "
        "(client_impersonators), e.g. user:ana@acme.com (repeat; a person, so MLflow records who); "
        "needed to log runs from a laptop",
    )
    p.add_argument(
        "--front-door",
        choices=FRONT_DOOR_MODES,
        default="load_balancer",
        help="load_balancer (default: custom domain, managed certificate) or direct_iap (run.app URL, cheaper)",
    )
    p.add_argument("--project-number", default="", help="default: from gcloud, else asked on a terminal")
    p.add_argument("--state-bucket", default="", help="default: PROJECT-tfstate; one bucket for all environments")
    p.add_argument("--config-dir", type=Path, default=REPO_ROOT / "config", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = args.config_dir / f"{args.environment}.toml"
    number, why = (args.project_number, "") if args.project_number else project_number(args.project, sys.stdin.isatty())
    problems = []
    if not number:
        problems.append(
            f"project_number: unknown — {why} and no terminal to ask on; pass --project-number with the digits "
            f"`{shlex.join(number_command(args.project))}` prints"
        )
    if not args.domain and args.front_door != "direct_iap":
        problems.append(
            "--domain: missing — give the hostname users will open, e.g. --domain mlflow.acme.com "
            "(or --front-door direct_iap for the service's run.app URL)"
        )
    if args.environment == EXAMPLE_ENVIRONMENT:
        problems.append(f'environment: {EXAMPLE_ENVIRONMENT!r} is the embedded example\'s; name this one, e.g. "prod"')
    if path.exists() and not args.force:
        problems.append(f"{path}: exists; edit it, or pass --force to start it again")
    text = environment_toml(args, number)
    try:
        # Without a number, the rest is still checked (with a well-formed stand-in), so every problem shows at once.
        parse_config(text if number else environment_toml(args, STAND_IN_NUMBER), path.name)
    except ConfigError as error:
        problems += error.problems
    if problems:
        print("\n".join(f"error: {problem}" for problem in problems), file=sys.stderr)
        return 2
    path.write_text(text)
    shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    print(
        f"wrote {shown}; select it in this shell and synthesize:\n"
        f"  export {CONFIG_ENV_VAR}={shlex.quote(str(shown))} CHECKPOINT_DISABLE=1\n  npx cdktf synth",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
