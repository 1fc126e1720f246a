"""Run several commands of one service's command line in one process: `auth create-db migrate`.

`make up` prepares each service this way: one interpreter start (the imports cost seconds on
a busy machine) instead of one per command.
"""

from __future__ import annotations

import importlib
import sys

from bazaar.shared.cli import ServiceCommands, run


def main(argv: list[str]) -> int:
    """Run `commands` of service `name` in order; stop at the first failing one."""
    name, *commands = argv
    service: ServiceCommands = importlib.import_module(f"bazaar.{name}.cli").COMMANDS
    for command in commands:
        status = run(service, [command])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
