"""Files written so that a crash never leaves a complete-looking one: a temporary name, fsync,
then a rename over the final name (``os.replace`` is atomic on one file system)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str], mode: str = "wb", **options: Any
) -> Iterator[IO[Any]]:
    """Open ``path.partial`` for writing (``open``'s ``options``); on a clean exit flush, fsync
    and rename it to ``path``; on an error remove it, leaving whatever ``path`` held before."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, mode, **options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write JSON under a temporary name, fsync, then rename over ``path``."""
    with atomic_file(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically; every plot goes through here."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as f:
        fig.savefig(f, format="png", dpi=dpi)
    return out
