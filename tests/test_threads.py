"""Waiting for a background thread stays safe when Ctrl-C interrupts the wait (real SIGINTs:
the ``ctrl_c_later`` fixture)."""

from __future__ import annotations

import threading

import pytest

from ser.threads import Background


def test_a_plain_wait_is_interrupted_and_the_thread_runs_on(ctrl_c_later) -> None:
    gate, done = threading.Event(), []
    bg = Background(lambda: (gate.wait(10), done.append(1)), name="t")
    ctrl_c_later(0.1, gate.set)
    with pytest.raises(KeyboardInterrupt):
        bg.wait()
    assert done == [] and not bg.finished  # interrupted while the thread was held at the gate
    bg.wait()  # waiting again really waits (Thread.join on CPython 3.11 would return at once)
    assert done == [1] and bg.finished


def test_waiting_through_interrupts_returns_when_the_thread_is_done_and_then_raises(ctrl_c_later) -> None:
    gate, done = threading.Event(), []
    bg = Background(lambda: (gate.wait(10), done.append(1)), name="t")
    ctrl_c_later(0.1, gate.set)
    with pytest.raises(KeyboardInterrupt):
        bg.wait(through_interrupts=True)
    assert done == [1]  # the interrupt is raised only after the thread finished


def test_the_thread_counts_as_finished_when_its_target_raises() -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    hook, seen = threading.excepthook, []
    threading.excepthook = lambda args: seen.append(args.exc_type)
    try:
        bg = Background(boom, name="t")
        bg.wait()
        bg.thread.join(5)
    finally:
        threading.excepthook = hook
    assert bg.finished and seen == [RuntimeError]  # the error is reported as any thread's is
