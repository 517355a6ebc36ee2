"""Subcommand dispatch of the tools in tests/tools (stdlib only).

    from toolcli import command, run

    @command
    def stats_dump(path): ...      # `tool.py stats-dump PATH`

    if __name__ == "__main__":
        run()

A subcommand's arguments are its function's positional parameters (strings);
it fails by raising SystemExit or returning a non-zero exit status.
"""

import os
import sys

COMMANDS = {}


def command(fn):
    COMMANDS[fn.__name__.replace("_", "-")] = fn
    return fn


def run():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} {'|'.join(COMMANDS)} ARGS... (see the docstring)")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]) or 0)
