"""Stopping a command: SIGTERM (a batch scheduler's time limit, ``kill``, ``timeout``) stops it as
Ctrl-C does, so its cleanup runs (locks released, temporary files removed) and a trainer keeps the
steps it finished; and a signal that arrives while state is half updated waits until it is whole.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "deferred", "sigterm_interrupts"]

STOPPING = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's ``KeyboardInterrupt`` is, so the same cleanup runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside: SIGTERM raises ``Terminated`` (in the main thread; elsewhere nothing changes)."""
    if not _main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM are held back and delivered once the block has run, so an
    update of several parts (weights, optimizer, schedule) is never left half done. Only the
    main thread receives signals; elsewhere nothing changes."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    held = [s for s in STOPPING if signal.getsignal(s) is not None]  # None: set outside Python
    before = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
