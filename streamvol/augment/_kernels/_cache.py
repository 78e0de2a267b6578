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
  ``tests/augment/test_kernels.py`` fails, naming the hash to record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["cache_if_unchanged", "sources_sha256"]


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
