"""`mlflow-iap-token`: print an IAP token for the MLflow server, for curl and other HTTP clients."""

from __future__ import annotations

import argparse
import logging
import sys

from mlflow_iap_auth._auth import HEADER, IapAuthError, get_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-iap-token",
        description=(
            "Print a service-account-signed JWT that IAP accepts for URL (default: $MLFLOW_TRACKING_URI), "
            "made from Application Default Credentials. Example: "
            f'curl -H "{HEADER}: Bearer $(mlflow-iap-token)" "$MLFLOW_TRACKING_URI/health"'
        ),
    )
    parser.add_argument("url", nargs="?", help="the IAP-protected https:// URL (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument(
        "--header", action="store_true", help=f"print a whole '{HEADER}: Bearer …' header line for curl -H"
    )
    args = parser.parse_args(argv)
    # Library warnings (e.g. google-auth's "no project ID") would only clutter a command whose output
    # is a token; errors still reach stderr.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    try:
        token = get_token(args.url)
    except IapAuthError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{HEADER}: Bearer {token}" if args.header else token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
