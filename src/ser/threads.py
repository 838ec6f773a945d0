"""A background thread whose end can be waited for safely, even through Ctrl-C.

On CPython before 3.12, a Ctrl-C that interrupts ``Thread.join`` marks the thread as stopped
while it is still running (python/cpython#90882): a later ``join`` returns at once, and the
caller goes on to close what the thread is still using (an HDF5 file, here), which crashes
or hangs the interpreter on exit. :class:`Background` therefore waits on an event that the
thread sets as it returns, never on ``join``.
"""

from __future__ import annotations

import threading
from typing import Callable


class Background:
    """Runs ``target()`` on a daemon thread named ``name``; :meth:`wait` for it to return."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self._finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        finally:
            self._finished.set()

    @property
    def finished(self) -> bool:
        """Whether ``target`` has returned (or raised)."""
        return self._finished.is_set()

    def wait(self, *, through_interrupts: bool = False) -> None:
        """Return once ``target`` has returned.

        A Ctrl-C while waiting raises KeyboardInterrupt at once (the thread runs on), unless
        ``through_interrupts``: then the wait goes on until the thread is done and the first
        KeyboardInterrupt is raised afterwards, so nothing the thread uses is released under it.
        """
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                self._finished.wait()
                break
            except KeyboardInterrupt as exc:
                if not through_interrupts:
                    raise
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
