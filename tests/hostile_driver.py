"""Run the whole command surface over materialised hostile projects; one JSON line per command.

Used by tests/test_hostile.py in a subprocess, so a signal (a parser's SIGSEGV) fails the test
instead of killing pytest. Usage: python tests/hostile_driver.py DIR [DIR ...]
"""

from __future__ import annotations

import json
import sys
import traceback

from click.testing import CliRunner

from engine.cli import main

COMMANDS = (["validate"], ["test"], ["graph"], ["graph", "--format", "json"], ["plan"])


def drive(root: str) -> None:
    for command in COMMANDS:
        args = [*command, root, "--base", root] if command == ["plan"] else [*command, root]
        result = CliRunner().invoke(main, args)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        detail = "".join(traceback.format_exception(result.exception)) if crashed else ""
        print(json.dumps({"root": root, "command": " ".join(command), "exit": result.exit_code,
                          "output": result.output, "traceback": detail}), flush=True)


if __name__ == "__main__":
    for directory in sys.argv[1:]:
        drive(directory)
