"""Entry point of `cdktf synth`: validate the configuration first, so bad input writes nothing."""

import sys


def main() -> int:
    from stacks.config import ConfigError, load_configs

    try:
        configs = load_configs()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from stacks.app import build_app

    build_app(configs).synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
