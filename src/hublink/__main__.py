"""Entry point: the only place that calls sys.exit."""

from __future__ import annotations

import sys

from hublink.cli import main as cli_main


def main() -> None:
    """Run the command line and exit with its code."""
    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
