"""Waiting for a background thread stays safe when Ctrl-C interrupts the wait."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from ser.threads import Background


def _ctrl_c_then(after: float, then) -> threading.Timer:
    """Send this process's main thread a real SIGINT in ``after`` seconds, then call ``then`` 0.3 s later."""
    main = threading.main_thread().ident

    def fire() -> None:
        signal.pthread_kill(main, signal.SIGINT)
        time.sleep(0.3)
        then()

    timer = threading.Timer(after, fire)
    timer.start()
    return timer


def test_a_plain_wait_is_interrupted_and_the_thread_runs_on() -> None:
    gate, done = threading.Event(), []
    bg = Background(lambda: (gate.wait(10), done.append(1)), name="t")
    timer = _ctrl_c_then(0.1, gate.set)
    with pytest.raises(KeyboardInterrupt):
        bg.wait()
    assert done == [] and not bg.finished  # interrupted while the thread was held at the gate
    bg.wait()  # waiting again really waits (Thread.join on CPython 3.11 would return at once)
    assert done == [1] and bg.finished
    timer.join()


def test_waiting_through_interrupts_returns_when_the_thread_is_done_and_then_raises() -> None:
    gate, done = threading.Event(), []
    bg = Background(lambda: (gate.wait(10), done.append(1)), name="t")
    timer = _ctrl_c_then(0.1, gate.set)
    with pytest.raises(KeyboardInterrupt):
        bg.wait(through_interrupts=True)
    assert done == [1]  # the interrupt is raised only after the thread finished
    timer.join()


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
