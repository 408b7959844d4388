"""Command line: `python -m service <command>` (`--help` lists them). The commands are one table,
service/ops/cli.py; here the arguments are parsed, the command looked up and called, its code
the exit status."""

from __future__ import annotations

import sys

from service.ops.cli import COMMANDS, parser, settings_for_command


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # an unknown command: argparse's usage line, exit 2
    settings = settings_for_command()
    if settings is None:  # an invalid setting, named in one line
        return 2
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
