"""Run code that might hang in a child process with a hard time limit: a guard against a test
suite that waits forever, not a timing assertion."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence

import pytest


def run_guarded(
    args: Sequence[str],
    *,
    limit: float = 300,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``args`` (a command line, or ``["-c", code]`` for this Python) run to its end, or killed
    with every process it started after ``limit`` seconds, failing the test."""
    command = [sys.executable, *args] if args[0] in ("-c", "-m") else list(args)
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(command)} still ran after {limit} s (hung?):\n{out[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


def default_threads() -> dict[str, str]:
    """This environment without the suite's ``OMP_NUM_THREADS`` (conftest): a child process
    runs torch at its default thread count, as a user's does (a hang check needs a busy
    OpenMP pool in the process that forks the loader's workers)."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


class Expired(Exception):
    """The code under ``hard_limit`` ran past its limit."""


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    """Raise ``Expired`` in this (main) thread if the block runs longer than ``seconds``."""

    def expire(*_: object) -> None:
        raise Expired(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
