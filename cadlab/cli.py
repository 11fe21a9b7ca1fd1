"""The ``cadlab`` command: one entry point for the course's command-line tools.

    cadlab reconstruct PART.stl [-o DIR] [--samples K] [--model PATH]   (notebook 07)
    cadlab iterative-generate --prompt "..." [--method jacobi] ...       (notebook 05)

Each subcommand is the ``main(argv)`` of its module, so ``python -m cadlab.reconstruct`` and
``python -m cadlab.parallel`` do the same thing.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "reconstruct": ("cadlab.reconstruct", "point cloud of an STL -> CadQuery code -> solid (CAD-Recode)"),
    "iterative-generate": ("cadlab.parallel", "block-wise parallel decoding of prompts (seed, Jacobi or greedy)"),
}


def usage() -> str:
    lines = ["usage: cadlab COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<20} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "`cadlab COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"cadlab: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
