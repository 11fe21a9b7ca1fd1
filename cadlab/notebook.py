"""Small conveniences every notebook uses: the versions cell and Markdown tables."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

import torch
from IPython.display import Markdown

PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "matplotlib")


def print_versions(*extra: str) -> None:
    """Print Python, the core packages (plus ``extra`` ones) and the CPU threads torch uses.

    Python's minor version only (``python 3.12``): the course supports 3.11, 3.12 and 3.13, and its
    stored outputs do not depend on which (tests/notebooks/sanitize.cfg maps the three to one token).
    """
    parts = ["python {}.{}".format(*platform.python_version_tuple()[:2])]
    for name in PACKAGES + extra:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    print(" | ".join(parts))
    print(f"device: cpu, torch threads: {torch.get_num_threads()}")


def md_table(headers, rows):
    """A Markdown table for display in a notebook (``IPython.display.Markdown``)."""
    def cell(value):
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))
