"""Tasks in worker processes, results in order, a sliding window ahead (ser.featurize.taskpool), and the
tasks featurize cuts its clips into."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from ser.featurize import taskpool
from ser.featurize.job import CHUNK_CLIPS, _tasks


class FakePool:
    """An executor that runs nothing itself: a task's future is done at submission when the task
    is in ``done`` (its result ``10 * task``) or ``fail`` (a ValueError), else pending until the
    test completes it."""

    def __init__(self, done: Any = (), fail: Any = ()) -> None:
        self.done, self.fail = set(done), set(fail)
        self.submitted: list[tuple[Any, Future]] = []
        self.shut_down: dict | None = None

    def submit(self, fn: Any, task: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        if task in self.fail:
            future.set_exception(ValueError(f"task {task} failed"))
        elif task in self.done:
            future.set_result(10 * task)
        self.submitted.append((task, future))
        return future

    def shutdown(self, **kwargs: Any) -> None:
        self.shut_down = kwargs


def test_results_in_task_order_however_the_tasks_finish() -> None:
    pool = FakePool(done=range(1, 6))  # every task but the first is done at once
    late = threading.Timer(0.05, lambda: pool.submitted[0][1].set_result(0))
    late.start()
    try:
        assert list(taskpool.in_order(None, range(6), window=6, ahead=6, pool=pool)) == [0, 10, 20, 30, 40, 50]
    finally:
        late.join()
    assert pool.shut_down is None  # a finished run leaves the workers for the next


def test_at_most_a_window_of_tasks_is_submitted_ahead_of_the_consumer() -> None:
    pool = FakePool(done=range(10))  # workers far ahead of a slow consumer
    results = taskpool.in_order(None, range(10), window=3, ahead=3, pool=pool)
    assert pool.submitted == []  # a generator: nothing is submitted before the consumer asks
    taken = []
    for result in results:
        taken.append(result)
        assert len(pool.submitted) - len(taken) <= 3  # never more than the window outstanding
        assert len(pool.submitted) == min(10, len(taken) + 3)  # and the window kept full
    assert taken == [10 * i for i in range(10)]


def test_a_tasks_error_is_raised_and_the_workers_stopped() -> None:
    pool = FakePool(done={0}, fail={1})
    results = taskpool.in_order(None, range(8), window=4, ahead=2, pool=pool)
    assert next(results) == 0
    with pytest.raises(ValueError, match="task 1 failed"):
        next(results)
    assert pool.shut_down == {"wait": True, "kill_workers": True}


def test_a_consumer_that_stops_early_stops_the_workers() -> None:
    pool = FakePool(done={0})
    results = taskpool.in_order(None, range(8), window=4, ahead=2, pool=pool)
    assert next(results) == 0
    results.close()  # e.g. the store writer failed: featurize closes the results
    assert not any(future.cancelled() for _, future in pool.submitted)  # loky settles them (see in_order)
    assert pool.shut_down == {"wait": True, "kill_workers": True}


def test_at_most_ahead_tasks_are_unfinished_in_the_executor() -> None:
    pool = FakePool(done={0})
    results = taskpool.in_order(None, range(10), window=6, ahead=2, pool=pool)
    assert next(results) == 0
    assert len(pool.submitted) == 3  # tasks 1 and 2 run: one more would exceed ahead, though the window has room
    pool.submitted[1][1].set_result(10)
    assert next(results) == 10
    assert len(pool.submitted) == 4  # task 1 finished: task 3 went in
    for _, future in pool.submitted[2:]:
        future.set_result(None)
    for _ in range(2):
        next(results)
    assert len(pool.submitted) == 6
    results.close()


def test_window_and_ahead_must_hold_a_task() -> None:
    with pytest.raises(ValueError, match="window"):
        list(taskpool.in_order(None, range(3), window=0, ahead=1, pool=FakePool()))
    with pytest.raises(ValueError, match="ahead"):
        list(taskpool.in_order(None, range(3), window=2, ahead=0, pool=FakePool()))


def _square(x: int, *, plus: int = 0) -> int:
    return x * x + plus


def test_real_workers_in_order_with_keyword_arguments() -> None:
    pool = taskpool.executor(2)
    assert list(taskpool.in_order(_square, range(20), window=5, ahead=3, pool=pool, plus=1)) == [x * x + 1 for x in range(20)]
    assert taskpool.executor(2) is pool  # reused, not restarted


@pytest.mark.parametrize("n", [0, 1, 5, 2 * CHUNK_CLIPS * 2, 2 * CHUNK_CLIPS * 2 + 1, 50])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_tasks_keep_every_job_once_in_order_and_end_with_one_clip_tasks(n: int, workers: int) -> None:
    jobs = list(range(n))
    tasks = _tasks(jobs, workers)
    assert [j for t in tasks for j in t] == jobs
    assert all(1 <= len(t) <= CHUNK_CLIPS for t in tasks)
    if workers > 1:
        singles = [len(t) == 1 for t in tasks]
        tail = len(singles) - singles.index(True) if True in singles else 0
        assert all(singles[len(tasks) - tail:])  # one-clip tasks at the end only
        assert min(n, 2 * CHUNK_CLIPS * workers) <= tail <= min(n, 2 * CHUNK_CLIPS * workers + CHUNK_CLIPS - 1)
        assert all(len(t) == CHUNK_CLIPS for t in tasks[:len(tasks) - tail])  # before them, whole tasks
    else:
        assert all(len(t) == CHUNK_CLIPS for t in tasks[:-1])


def _nap(x: int) -> int:
    import time

    time.sleep(0.2)
    return x


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_real_workers_are_gone_when_the_consumer_stops_early() -> None:
    """Closing early kills loky's workers (and its manager thread does not fail on the way), so
    the interpreter's exit, which joins them, cannot hang on them."""
    import multiprocessing

    pool = taskpool.executor(2)
    results = taskpool.in_order(_nap, range(12), window=8, ahead=taskpool.ahead(2), pool=pool)  # featurize's
    assert next(results) == 0
    workers = [p for p in multiprocessing.active_children() if "Loky" in p.name]
    assert workers
    results.close()
    assert not any(p.is_alive() for p in workers)
    manager = pool._executor_manager_thread  # None once shut down and joined
    assert manager is None or not manager.is_alive()
    assert list(taskpool.in_order(_square, range(4), window=2, ahead=2, pool=taskpool.executor(2))) == [0, 1, 4, 9]
