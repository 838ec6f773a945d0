"""Tasks run by local worker processes, their results taken in order, a bounded window ahead.

joblib's generators dispatch a new task whenever one finishes, whether or not the consumer
has taken the results already waiting, so bounding what piles up in the parent took windows
of tasks, one after another (:func:`ser.featurize.job._results`): at the end of each, the workers
that finished first waited for the last task of the window, and then for the next window's
start, ~25 ms a window on two workers. :func:`in_order` slides instead: it submits a task
whenever one ends, as long as the tasks submitted and not yet taken by the consumer stay within
the window, so no worker waits for another's task to end.

The workers are loky's reusable executor (the one joblib's default backend runs on), so a
pool started by one call serves the next.
"""

from __future__ import annotations

import collections
import time
from concurrent import futures
from typing import Any, Callable, Iterable, Iterator

#: Seconds an idle worker waits for a task before it exits (joblib's default for loky too).
IDLE_TIMEOUT_S = 300
#: Thread-pool sizes set in a worker's environment before it imports anything (as joblib does
#: for its loky workers): one thread each, so that workers never oversubscribe the cores.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def executor(workers: int) -> Any:
    """loky's reusable executor with ``workers`` one-threaded processes (started, or the running one)."""
    from joblib.externals.loky import get_reusable_executor

    return get_reusable_executor(max_workers=workers, timeout=IDLE_TIMEOUT_S,
                                 env={var: "1" for var in _THREAD_VARS})


def in_order(fn: Callable[..., Any], tasks: Iterable[Any], *, window: int, ahead: int, pool: Any,
             **kwargs: Any) -> Iterator[Any]:
    """``fn(task, **kwargs)`` for each task, run by ``pool`` (an executor: ``submit`` returning
    futures), the results yielded in the tasks' order.

    At most ``window`` tasks are submitted and not yet yielded, so the results held here never
    exceed a window's, however slow the consumer; and at most ``ahead`` of them are unfinished
    at once, in the executor (:func:`ahead`: two a worker keep every worker busy). Tasks waiting
    beyond loky's call queue, in loky's own queue, make ``shutdown(kill_workers=True)`` fail:
    loky 3.6 drops the waiting tasks but not their ids, and its manager thread then dies on the
    first id (after killing the workers, with a traceback); :func:`_stop` waits for them to move.
    Only this (the consumer's) thread submits: when the oldest task has not ended, it waits for
    whichever ends first, and tops the executor up.

    If the consumer stops early (an error, Ctrl-C, the generator closed) or a task raises, the
    workers are stopped (``shutdown(kill_workers=True)``, as joblib does), so that nothing runs
    on for a consumer that has gone; the task's error is raised here.
    """
    if window < 1 or ahead < 1:
        raise ValueError(f"window and ahead must be at least 1, not {window} and {ahead}")
    todo = iter(tasks)
    pending: collections.deque = collections.deque()  # submitted, not yet yielded, in order
    running: set = set()  # of those, the ones not known to be finished
    more = True

    def top_up() -> None:
        nonlocal running, more
        running = {f for f in running if not f.done()}
        while more and len(pending) < window and len(running) < ahead:
            task = next(todo, _END)
            if task is _END:
                more = False
                return
            future = pool.submit(fn, task, **kwargs)
            pending.append(future)
            running.add(future)

    finished = False
    try:
        top_up()
        while pending:
            if not pending[0].done():
                futures.wait(running, return_when=futures.FIRST_COMPLETED)
                top_up()
                continue
            result = pending.popleft().result()
            top_up()  # before the consumer runs: the workers need not wait for it
            yield result
        finished = True
    finally:
        if not finished:  # the futures are left as they are: loky's manager thread settles them as it
            _stop(pool)   # stops (a future cancelled here made it fail, and leave the workers running)


_END = object()


def ahead(workers: int) -> int:
    """Tasks to keep unfinished in loky's executor: two a worker, the one it runs and one waiting
    for it (joblib's ``pre_dispatch`` default). Once the workers run theirs, the waiting ones fit
    in loky's call queue (``max_workers + EXTRA_QUEUED_CALLS``); before that, a stop waits for
    them to be moved there (:func:`_stop`)."""
    return 2 * workers


def _stop(pool: Any) -> None:
    """Stop ``pool``'s workers and wait until they are gone, even if Ctrl-C is pressed again
    meanwhile: a worker left running keeps the interpreter from exiting (multiprocessing joins
    its children at exit). The interrupt already on its way is the one that stops the run.

    A task just submitted waits in loky's own queue until its manager thread moves it to the
    call queue, at once where there is room (:func:`ahead`), else when a worker takes a task;
    shut down before that, the thread fails on it (see :func:`in_order`), so the stop waits for
    that queue to empty, a second at most.
    """
    shutdown = getattr(pool, "shutdown", None)
    if shutdown is None:
        return
    waiting = getattr(pool, "_work_ids", None)  # loky's queue of submitted task ids (private)
    deadline = time.monotonic() + 1.0
    while waiting is not None and not waiting.empty() and time.monotonic() < deadline:
        time.sleep(0.001)
    while True:
        try:
            shutdown(wait=True, kill_workers=True)
            return
        except KeyboardInterrupt:
            continue
