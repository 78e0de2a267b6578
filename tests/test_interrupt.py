"""SIGTERM stops a command as Ctrl-C does, and a signal inside ``deferred()`` waits for the end
of the block (the trainer's update: tests/train/test_resume.py)."""

from __future__ import annotations

import signal
import threading

import pytest

from streamvol.core.interrupt import Terminated, deferred, sigterm_interrupts


def test_ctrl_c_inside_deferred_arrives_once_the_block_has_run():
    ran = []
    with pytest.raises(KeyboardInterrupt), deferred():
        signal.raise_signal(signal.SIGINT)
        ran.append("the rest of the block")
    assert ran == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_raises_terminated_a_keyboard_interrupt_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught, sigterm_interrupts():
        signal.raise_signal(signal.SIGTERM)
    assert isinstance(caught.value, KeyboardInterrupt) and "SIGTERM" in str(caught.value)
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_inside_deferred_is_held_back_then_terminates():
    ran = []
    with sigterm_interrupts(), pytest.raises(Terminated), deferred():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # twice: delivered once
        ran.append("the rest of the block")
    assert ran == ["the rest of the block"]


def test_outside_the_main_thread_no_handler_changes():
    seen = []

    def work():
        with sigterm_interrupts(), deferred():
            seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [before]
