"""One writer per output folder (a shard set, a run): a lock file that names its holder (pid
and host).

The lock is ``<folder>/.streamvol.lock``, created with ``O_CREAT | O_EXCL`` so exactly one
writer makes it. A second writer is refused with the holder's pid, host and start time. A lock
whose holder is a dead process on this host is stale and taken over: renamed aside (only one
taker's rename succeeds), checked to be the stale lock that was read, then created afresh.
The lock is released when the writer finishes or fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamvol.errors import FolderLocked

LOCK = ".streamvol.lock"
_UNFINISHED = 10.0  # seconds after which an empty or unreadable lock file counts as abandoned


@contextlib.contextmanager
def folder_lock(
    folder: str | Path, *, writer: str = "streamvol shard", instead: str = "use another --out"
) -> Iterator[dict[str, Any]]:
    """Hold ``folder``'s writer lock (creating the folder) for the duration of the block;
    ``writer`` and ``instead`` name the command and the way out in a refusal.

    A folder this call created and that is still empty at the end is removed again, so a run
    refused before writing leaves nothing behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "token": uuid.uuid4().hex,
    }
    _acquire(path, me, f"another `{writer}` is writing here", instead)
    try:
        yield me
    finally:
        _release(path, me)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def _acquire(path: Path, me: dict[str, Any], busy: str, instead: str) -> None:
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            seen = _read(path)
            if seen is None:
                continue  # released between our two calls: try again
            text, holder = seen
            if not _stale(path, holder):
                raise FolderLocked(_held_by(path, holder, busy, instead)) from None
            _take_over(path, text)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        return
    raise FolderLocked(f"{path.parent}: could not take the writer lock {path}; try again")


def _read(path: Path) -> tuple[str, dict[str, Any] | None] | None:
    """(text, parsed holder or None when unreadable), or None when the lock is gone."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    return text, holder if isinstance(holder, dict) else None


def _stale(path: Path, holder: dict[str, Any] | None) -> bool:
    """A lock of a dead process on this host, or one left unwritten for a while."""
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNFINISHED
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: no way to tell it is gone
    return not _alive(int(holder.get("pid", -1)))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _take_over(path: Path, seen: str) -> None:
    """Move the stale lock aside; when what was moved is not the lock read as stale (another
    writer took it over meanwhile), put it back without overwriting anything."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another taker moved it first
    try:
        if aside.read_text() != seen:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink()


def _release(path: Path, me: dict[str, Any]) -> None:
    seen = _read(path)
    if seen is not None and seen[1] is not None and seen[1].get("token") == me["token"]:
        path.unlink()


def _held_by(path: Path, holder: dict[str, Any] | None, busy: str, instead: str) -> str:
    if holder is None:
        who = "a writer that is starting"
    else:
        who = (
            f"process {holder.get('pid')} on host {holder.get('host')} "
            f"(since {holder.get('since')})"
        )
    return (
        f"{path.parent}: {busy}: {who} holds {path}; expected one writer per folder. Wait for "
        f"it, or {instead}; if that process is gone (another host, or a reused pid), delete the "
        "lock file"
    )
