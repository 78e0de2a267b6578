"""numba's on-disk cache for kernels that compile in code from other files, without going stale.

numba keys a cached kernel on its own source file only (its documented limit: "changes to
symbols defined in another file are not detected"), so a kernel that inlines a helper from
another file would, after that file changed, keep loading the machine code built from the old
helper. A module holding such kernels therefore records the sha256 of the files it inlines from
(``INLINED``, ``INLINED_SHA256``) and turns the cache on through ``cache_if_unchanged``:

- the files still hash to the record: the kernels cache as usual. Any edit that brings the record
  up to date edits the kernel's own file, which makes numba drop what it had cached for it;
- they do not (a helper was edited, the record was not): caching stays off for those kernels, so
  every process compiles them afresh from the current helpers (slow to start, never stale), and
  ``tests/augment/test_kernels.py`` fails until the records are brought up to date with
  ``python -m streamvol.augment._kernels._cache``.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

__all__ = ["cache_if_unchanged", "sources_sha256", "update_records"]


def sources_sha256(folder: str | Path, names: tuple[str, ...]) -> str:
    """The sha256 (hex) of the files ``names`` in ``folder``, each with its name, in order
    (line ends as ``\\n``)."""
    digest = hashlib.sha256()
    for name in names:
        text = (Path(folder) / name).read_bytes().replace(b"\r\n", b"\n")  # same on Windows
        digest.update(name.encode() + b"\0" + text + b"\0")
    return digest.hexdigest()


def cache_if_unchanged(module_file: str, inlined: tuple[str, ...], recorded: str, *kernels) -> bool:
    """Enable numba's on-disk cache for ``kernels`` (dispatchers compiled without ``cache=``)
    when the files ``inlined``, beside ``module_file``, hash to ``recorded``; True if enabled."""
    try:
        current = sources_sha256(Path(module_file).parent, inlined)
    except OSError:  # sources not shipped: nothing to compare with, so no cache
        return False
    if current != recorded:
        return False
    for kernel in kernels:
        kernel.enable_caching()
    return True


def _inlined(path: Path) -> tuple[str, ...] | None:
    """The ``INLINED`` tuple a module file assigns, or None."""
    for node in ast.parse(path.read_text()).body:
        targets = [getattr(t, "id", None) for t in getattr(node, "targets", ())]
        if isinstance(node, ast.Assign) and targets == ["INLINED"]:
            return tuple(ast.literal_eval(node.value))
    return None


def update_records(folder: str | Path = Path(__file__).parent) -> list[str]:
    """Rewrite each module's ``INLINED_SHA256`` in ``folder`` to the current hash of the files
    it names, a module after the recording modules it inlines from (whose records are part of
    what it hashes); returns the modules changed."""
    folder = Path(folder)
    records = {p.name: names for p in sorted(folder.glob("*.py")) if (names := _inlined(p))}
    changed, done = [], set()
    while len(done) < len(records):
        waiting = set(records) - done
        ready = [n for n in sorted(waiting) if not set(records[n]) & waiting]
        if not ready:
            raise ValueError(f"{folder}: modules inline from each other in a cycle: {records}")
        for name in ready:
            path = folder / name
            text = path.read_text()
            line = f'INLINED_SHA256 = "{sources_sha256(folder, records[name])}"'
            new = re.sub(r'^INLINED_SHA256 = ".*"$', line, text, count=1, flags=re.M)
            if new != text:
                path.write_text(new)
                changed.append(name)
            done.add(name)
    return changed


if __name__ == "__main__":
    print("updated:", ", ".join(update_records()) or "nothing (the records are current)")
