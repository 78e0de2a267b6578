"""Progress of a long step, for the command line: a rich bar with count, rate and ETA on a
terminal; plain lines (``epoch 2/10: 120/300 batches, 41 samples/s, ETA 4 s``) every few
seconds anywhere else (a log file, CI, a pipe), so a long step is never silent.

A job is the library's ``progress(done, total)`` callback itself::

    with progress(console) as show:
        job = show.job("shards", unit="shards")
        shard(config, out, progress=job)

On a terminal the bar shows the job as it moves and disappears when the display closes. Without
one, a line is printed when ``every`` seconds have passed since the job's last line (or its
start), also while no update comes (a ticker thread), and a last line when a job that printed
ends; the environment variable ``STREAMVOL_PROGRESS_EVERY`` sets ``every`` (0: every update).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
)
from rich.table import Column
from rich.text import Text

EVERY = 5.0  # seconds between plain lines
__all__ = ["EVERY", "Display", "Job", "format_seconds", "plain_line", "progress"]


def format_seconds(seconds: float) -> str:
    """``4 s``, ``2 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rate_text(value: float) -> str:
    """A rate to read at a glance: whole numbers from 100, three figures below (0.364)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def plain_line(
    description: str,
    done: float,
    total: float | None,
    elapsed: float,
    *,
    unit: str = "",
    per: float = 1.0,
    rate_unit: str | None = None,
    rate: float | None = None,
) -> str:
    """One progress line: ``epoch 2/10: 120/300 batches, 41 samples/s, ETA 4 s`` (rate and ETA
    once something is done; the elapsed time while nothing is, or when the total is unknown).
    ``rate``: units a second (default ``done / elapsed``)."""
    count = f"{done:g}/{total:g}" if total else f"{done:g}" if done else ""
    head = f"{description}: {count}{' ' + unit if unit and count else ''}".rstrip(": ")
    tail = rate_and_time(done, total, elapsed, unit=unit, per=per, rate_unit=rate_unit, rate=rate)
    return ", ".join([head, *tail])


def rate_and_time(
    done: float,
    total: float | None,
    elapsed: float,
    *,
    unit: str = "",
    per: float = 1.0,
    rate_unit: str | None = None,
    rate: float | None = None,
) -> list[str]:
    """``["41 samples/s", "ETA 4 s"]``: the rate once something is done, then the ETA, the time
    it took, or the elapsed time (nothing done yet, or no total)."""
    if rate is None:
        rate = done / elapsed if elapsed > 0 else 0.0
    parts = []
    if done and rate > 0:
        parts.append(f"{rate_text(rate * per)} {rate_unit or unit or 'steps'}/s")
    if total and done >= total:
        parts.append(f"done in {format_seconds(elapsed)}")
    elif total and done and rate > 0:
        parts.append(f"ETA {format_seconds((total - done) / rate)}")
    else:
        parts.append(f"{format_seconds(elapsed)} elapsed")
    return parts


class Job:
    """One step's progress; call it as ``job(done, total)`` (the library's callback)."""

    def __init__(
        self,
        display: Display,
        description: str,
        total: float | None,
        unit: str,
        per: float,
        rate_unit: str | None,
    ) -> None:
        self.display = display
        self.unit, self.per, self.rate_unit = unit, per, rate_unit
        self._start(description, total)
        self.task = display._add(self)

    def _start(self, description: str, total: float | None) -> None:
        self.description, self.total = description, total
        self.done = 0.0
        self.started = self.last_line = time.monotonic()
        self.first: tuple[float, float] | None = None  # (done, time) of the first update
        self.printed = False

    def __call__(self, done: float, total: float | None = None) -> None:
        self.update(done, total)

    def update(
        self, done: float, total: float | None = None, *, description: str | None = None
    ) -> None:
        self.done = done
        if self.first is None:
            self.first = (done, time.monotonic())
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self.display._update(self)

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def restart(
        self,
        description: str,
        total: float | None = None,
        *,
        unit: str | None = None,
        per: float = 1.0,
        rate_unit: str | None = None,
    ) -> None:
        """The same bar for the next round (an epoch, a fold): count and clock from zero; with
        a ``unit``, counting something else (``per`` and ``rate_unit`` as ``Display.job``)."""
        self._finish()
        if unit is not None:
            self.unit, self.per, self.rate_unit = unit, per, rate_unit
        self._start(description, total)
        self.display._reset(self)

    def item(self, description: str, done: float, total: float | None = None) -> None:
        """``update`` for one of several items each counted from zero (the volumes of a
        prediction, the runs of a comparison): a new ``description`` restarts the count and
        the clock, so the rate, ETA and time taken are the item's own."""
        if description != self.description:
            self.restart(description, total)
        self.update(done, total)

    def _since_first(self) -> dict[str, Any]:
        """Elapsed time, and the rate since the first update (the start is often slower: workers
        starting, kernels compiling), as ``plain_line`` and ``rate_and_time`` take them."""
        now = time.monotonic()
        base, since = self.first or (0.0, self.started)
        return {
            "elapsed": now - self.started,
            "unit": self.unit,
            "per": self.per,
            "rate_unit": self.rate_unit,
            "rate": (self.done - base) / (now - since) if now > since else None,
        }

    def line(self) -> str:
        return plain_line(self.description, self.done, self.total, **self._since_first())

    def stats(self) -> str:
        """``41 samples/s, ETA 4 s``: the bar's end, as the plain line ends."""
        return ", ".join(rate_and_time(self.done, self.total, **self._since_first()))

    def _finish(self) -> None:
        self.display._finish(self)


class Display:
    """Where jobs show: a rich bar on a terminal, plain lines elsewhere."""

    def __init__(self, console: Console, every: float | None = None) -> None:
        self.console = console
        self.every = _every() if every is None else every
        self.live = console.is_terminal and not console.quiet and not console.is_dumb_terminal
        self.jobs: list[Job] = []
        self.lock = threading.RLock()
        self.bar: Any = None
        if self.live:
            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(bar_width=None, table_column=Column(ratio=1)),
                MofNCompleteColumn(),
                _UnitColumn(),
                _StatsColumn(table_column=Column(no_wrap=True)),
                console=console,
                transient=True,
                expand=True,  # the bar takes what the text leaves: the ETA is never cut
            )

    def job(
        self,
        description: str,
        total: float | None = None,
        *,
        unit: str = "",
        per: float = 1.0,
        rate_unit: str | None = None,
    ) -> Job:
        """A new job; ``per``: ``rate_unit`` per ``unit`` (samples per batch) for the rate."""
        return Job(self, description, total, unit, per, rate_unit)

    def print(self, text: str) -> None:
        """A line above the bar (plain mode: a line)."""
        self.console.print(text, highlight=False, soft_wrap=True)

    # --- what jobs call -----------------------------------------------------------------

    def _add(self, job: Job) -> Any:
        with self.lock:
            self.jobs.append(job)
        if self.bar is None:
            return None
        return self.bar.add_task(
            job.description,
            total=job.total,
            unit=job.unit,
            job=job,
        )

    def _update(self, job: Job) -> None:
        if self.bar is not None:
            self.bar.update(
                job.task, completed=job.done, total=job.total, description=job.description
            )
            return
        with self.lock:
            now = time.monotonic()
            finished = bool(job.total) and job.done >= job.total
            if now - job.last_line >= self.every or (finished and job.printed):
                self._plain(job, now)

    def _reset(self, job: Job) -> None:
        if self.bar is not None:
            fields = {"unit": job.unit, "job": job}  # rich's reset replaces all the fields
            self.bar.reset(job.task, total=job.total, description=job.description, **fields)

    def _finish(self, job: Job) -> None:
        """Plain mode: a job that printed while it ran says how it ended."""
        if self.bar is None:
            with self.lock:
                finished = bool(job.total) and job.done >= job.total
                if job.printed and not finished:
                    self._plain(job, time.monotonic())

    def _plain(self, job: Job, now: float) -> None:
        job.last_line, job.printed = now, True
        self.print(job.line())

    def _tick(self, stop: threading.Event) -> None:
        """Plain mode: a line for every job that has been silent ``every`` seconds."""
        while not stop.wait(min(max(self.every, 0.2), 1.0)):
            with self.lock:
                now = time.monotonic()
                for job in self.jobs:
                    if job.total and job.done >= job.total:
                        continue
                    if now - job.last_line >= max(self.every, 0.2):
                        self._plain(job, now)


def _every() -> float:
    text = os.environ.get("STREAMVOL_PROGRESS_EVERY", "")
    try:
        return max(0.0, float(text)) if text else EVERY
    except ValueError:
        return EVERY


@contextlib.contextmanager
def progress(console: Console, *, every: float | None = None) -> Iterator[Display]:
    """A progress display on ``console`` for the ``with`` block (see the module docstring)."""
    display = Display(console, every)
    if display.bar is not None:
        with display.bar:
            yield display
        return
    stop = threading.Event()
    ticker = threading.Thread(target=display._tick, args=(stop,), daemon=True)
    ticker.start()
    try:
        yield display
    finally:
        stop.set()
        ticker.join()
        for job in display.jobs:
            job._finish()


class _UnitColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        return Text(task.fields.get("unit", ""), style="progress.download")


class _StatsColumn(ProgressColumn):
    """Rate and ETA (or elapsed time) as the plain lines have them: from the job's first update,
    so steps slower than rich's 30-second speed window still get both after the first one."""

    def render(self, task: Any) -> Text:
        return Text(task.fields["job"].stats(), style="progress.data.speed")
