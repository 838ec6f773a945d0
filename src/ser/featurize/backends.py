"""Where featurize's workers run: local processes, or a Dask or Ray cluster, through joblib.

joblib's own backends do the distribution; this module only opens the right one. Only the
parent writes ``feats.h5`` whatever the backend: local workers (and a local cluster's) write
their tasks' part files, a remote cluster's workers return their rows for the parent to write
(:mod:`ser.featurize.worker`). A cluster's workers need the ``ser`` package installed and the
audio folder at the same path.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from ser.errors import SerError

LOCAL_BACKENDS = ("loky", "multiprocessing", "threading")
BACKENDS = LOCAL_BACKENDS + ("dask", "ray")


@contextlib.contextmanager
def compute_backend(backend: str, *, workers: int, scheduler: str | None = None) -> Iterator[None]:
    """Configure joblib for ``backend`` for the duration of the block.

    ``dask``: connect to ``scheduler`` (``tcp://host:8786``) or start a LocalCluster of
    ``workers`` single-threaded processes. ``ray``: connect to ``scheduler`` (``ray://host:10001``
    or ``auto``) or start a local Ray with ``workers`` CPUs.
    """
    from joblib import parallel_config

    if backend in LOCAL_BACKENDS:
        if scheduler:
            raise SerError(f"--scheduler is for the dask and ray backends, not {backend}")
        with parallel_config(backend=backend, n_jobs=workers):
            yield
        return
    if backend == "dask":
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise SerError("the dask backend needs Dask: pip install -e '.[dask]'") from None
        with contextlib.ExitStack() as stack:
            if scheduler:
                try:
                    stack.enter_context(Client(scheduler, timeout=30))  # joblib finds the current client
                except OSError as exc:
                    raise SerError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            else:
                cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1,
                                                           processes=True, dashboard_address=None))
                stack.enter_context(Client(cluster))
            with parallel_config(backend="dask", n_jobs=-1):
                yield
        return
    if backend == "ray":
        try:
            import ray
            from ray.util.joblib import register_ray
        except ImportError:
            raise SerError("the ray backend needs Ray: pip install -e '.[ray]'") from None
        started = not ray.is_initialized()
        if started:
            try:
                if scheduler:
                    ray.init(address=scheduler, log_to_driver=False)
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SerError(f"cannot start or reach Ray ({scheduler or 'local'}): {exc}") from None
        register_ray()
        try:
            with parallel_config(backend="ray", n_jobs=workers):
                yield
        finally:
            if started:
                ray.shutdown()
        return
    raise SerError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
