"""What every benchmark does with its table: print it, and append it to the markdown file ``--out``
names (``--out benchmarks/RESULTS.md`` records a run); a bare run changes no file."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_out(parser: argparse.ArgumentParser) -> None:
    """The ``--out`` option, the same in every benchmark."""
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown file to append the table to (benchmarks/RESULTS.md to record the run); "
        "without it, the table is only printed",
    )


def append(text: str, out: Path | None) -> None:
    """Append ``text`` to ``out`` after a blank line, when ``out`` is named."""
    if out is None:
        return
    with open(out, "a") as f:
        f.write("\n" + text.strip("\n") + "\n")
    print(f"appended to {out}", flush=True)


def publish(text: str, out: Path | None) -> None:
    """Print ``text``, and append it to ``out`` when one is named."""
    print(text.strip("\n"), flush=True)
    append(text, out)
