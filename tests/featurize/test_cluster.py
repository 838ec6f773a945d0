"""featurize on a Dask or Ray cluster through joblib: the same store as local processes."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ser.featurize.backends import compute_backend
from ser.errors import SerError
from ser.featurize.job import featurize
from ser.store.writer import Store


def _same_store(a: Path, b: Path) -> None:
    sa, sb = Store(a), Store(b)
    rows = sa.rows()
    assert sa.fingerprint() == sb.fingerprint()
    assert sa.meta().equals(sb.meta())
    for family in ("descriptors", "mel"):
        assert np.array_equal(sa.read(family, rows), sb.read(family, rows))


@pytest.mark.parametrize("backend", [
    pytest.param("dask", marks=pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                                  reason="Dask is not installed (pip install -e '.[dask]')")),
    pytest.param("ray", marks=pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                                 reason="Ray is not installed (pip install -e '.[ray]')")),
])
def test_a_local_cluster_writes_the_same_store_as_local_processes(backend: str, small_store: Path,
                                                                   small_store_config, tmp_path: Path) -> None:
    cfg = replace(small_store_config, out=tmp_path / f"{backend}.h5", backend=backend, workers=2,
                  min_clips_per_worker=1)
    summary = featurize(cfg, progress=False, log=lambda m: None)
    assert summary.n_failures == 0
    _same_store(small_store, cfg.out)


def test_scheduler_is_refused_for_local_backends() -> None:
    with pytest.raises(SerError, match="--scheduler is for the dask and ray backends"):
        with compute_backend("loky", workers=1, scheduler="tcp://127.0.0.1:1"):
            pass
    with pytest.raises(SerError, match="unknown backend"):
        with compute_backend("spark", workers=1):
            pass
