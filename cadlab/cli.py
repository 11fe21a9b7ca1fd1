"""The ``cadlab`` command: one entry point for the course's command-line tools.

    cadlab doctor [--skip-model]                                         (before the course)
    cadlab reconstruct PART.stl [-o DIR] [--samples K] [--model PATH]   (notebook 07)
    cadlab iterative-generate --prompt "..." [--method jacobi] ...       (notebook 05)
    cadlab bench decode [--new-tokens N] [--runs R]                      (notebook 03)
    cadlab babygpt [--max-new-tokens N] [--temperature T]                (notebook 04)
    cadlab train-babygpt [--max-steps N] ...                             (notebook 04)
    cadlab train-cadrecode [--minutes M] ... | --eval                    (notebook 07)
    cadlab train-autocomplete [--minutes M] ... | --eval                 (notebook 09)
    cadlab train-cadrille [--minutes M] ... | --eval                     (notebook 08)
    cadlab eval-grammar --model cadrecode|cadrille                       (notebook 10)

Each subcommand is the ``main(argv)`` of its module, so ``cadlab bench decode`` and
``python -m cadlab.lm.bench decode`` do the same thing; ``cadlab --version`` prints the version.
Flags are dashed (``--max-new-tokens``); where a published script used underscores (the iterative
generation script's ``--max_new_tokens``, ``--model_path``, ...), those spellings are accepted too.
A ``main`` that returns None exits 0.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from cadlab import __version__

COMMANDS = {
    "doctor": ("cadlab.doctor", "check in about a minute that this machine can run the course (exit 1 on a FAIL)"),
    "reconstruct": ("cadlab.cad.reconstruct_cli", "point cloud of an STL -> CadQuery code -> solid (CAD-Recode)"),
    "iterative-generate": ("cadlab.lm.parallel_decoding",
                           "block-wise parallel decoding of prompts (as published, Jacobi or greedy)"),
    "bench": ("cadlab.lm.bench", "decode throughput: our cached loop vs model.generate vs no cache (JSON)"),
    "babygpt": ("cadlab.lm.babygpt.__main__", "babyGPT's interactive prompt: type a prompt, read its continuation"),
    "train-babygpt": ("cadlab.train.babygpt", "train babyGPT on the bundled Shakespeare corpus"),
    "train-cadrecode": ("cadlab.train.cadrecode", "train (or --eval) the mini CAD-Recode on synthetic parts"),
    "train-autocomplete": ("cadlab.train.autocomplete",
                           "LoRA-train (or --eval) SmolLM2 as a CAD-sequence autocomplete"),
    "train-cadrille": ("cadlab.train.cadrille", "train (or --eval) the mini Cadrille: point clouds, images, text"),
    "eval-grammar": ("cadlab.train.grammar_eval",
                     "decode the mini CAD-Recode's or Cadrille's held-out parts with and without a grammar"),
}


def usage() -> str:
    lines = ["usage: cadlab COMMAND [ARGS...] | cadlab --version", "", "commands:"]
    lines += [f"  {name:<20} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "`cadlab COMMAND --help` describes a command's arguments."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"cadlab {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"cadlab: error: unknown command {command!r}; {hint}the commands are {', '.join(COMMANDS)} "
              "(`cadlab --help` describes them)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    status = module.main(rest)
    return 0 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
