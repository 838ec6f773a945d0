"""Data-parallel training (DDP) on the CPU with the gloo backend: 2 processes on loopback.

Tolerance: on separable synthetic classes both the single-process and the 2-process run
must exceed 0.8 test accuracy (chance is 1/3) and differ by at most 0.1. The statistics
all-reduced over ranks must equal the single-process ones (StandardScaler for descriptors)
to float32 rounding (rtol 1e-5, atol 1e-6).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from array_store import make_array_store
from ser.training.checkpoint import load_checkpoint
from ser.training.ddp import DistContext, shard_rows, unpadded_shard
from ser.evaluation.evaluator import evaluate
from ser.training.data import fit_statistics, load_rows, load_split, reduced_statistics
from ser.store import Store
from ser.training.loop import TrainConfig, load_train_data, train

QUIET = dict(log=lambda m: None)
WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 31 per class: an odd-sized train split is likely, so shards get padded
    return make_array_store(tmp_path_factory.mktemp("ddp") / "arr.h5", per_class=31, seed=0)


def test_shards_partition_rows_and_pad_to_equal_length() -> None:
    rows = np.arange(10, 27)
    for world in (2, 3, 4):
        ctxs = [DistContext(r, world, r) for r in range(world)]
        shards = [shard_rows(rows, c) for c in ctxs]
        assert len({len(s) for s in shards}) == 1
        own = np.concatenate([unpadded_shard(rows, c) for c in ctxs])
        assert np.array_equal(np.sort(own), rows)


@pytest.mark.parametrize("family", ["descriptors", "mel"])
@pytest.mark.parametrize("world", [2, 3])
def test_reduced_statistics_equal_single_process(store_path: Path, family: str, world: int) -> None:
    """Sums over padded shards, reduced, equal fit_statistics on the whole train split (in-process:
    the reduction is simulated by summing each rank's local sums)."""
    store = Store(store_path)
    cpu = torch.device("cpu")
    rows = store.rows("train")
    local: list[torch.Tensor] = []
    shards = []
    for r in range(world):
        ctx = DistContext(r, world, r)
        data = load_rows(store, shard_rows(rows, ctx), family, cpu)
        keep = np.r_[True, np.diff(data.rows) != 0] & np.isin(data.rows, unpadded_shard(rows, ctx))
        shards.append((data, keep))

        def record(t: torch.Tensor) -> torch.Tensor:
            local.append(t.clone())
            return t
        reduced_statistics(data, family, keep=keep, reduce=record)
    total = torch.stack(local).sum(0)
    got = [reduced_statistics(d, family, keep=k, reduce=lambda t: total) for d, k in shards]
    want = fit_statistics(load_split(store, "train", family, cpu), family)
    for mean, std in got:
        torch.testing.assert_close(mean, want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, want[1], rtol=1e-5, atol=1e-6)
    if family == "descriptors":
        from sklearn.preprocessing import StandardScaler

        sc = StandardScaler().fit(store.read("descriptors", rows))
        torch.testing.assert_close(got[0][0], torch.from_numpy(sc.mean_).float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[0][1], torch.from_numpy(sc.scale_).float(), rtol=1e-5, atol=1e-5)


def _stats_worker(rank: int, world: int, port: int, store: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank)
        result = {}
        for family in ("descriptors", "mel"):
            data = load_train_data(Store(store), family, torch.device("cpu"), ctx=ctx)
            result[family] = (data.mean, data.std, len(data.train), data.val is not None)
        torch.save(result, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduced_statistics_over_gloo(store_path: Path, tmp_path: Path) -> None:
    """load_train_data on 2 real gloo ranks: global statistics, equal shards, val on rank 0 only."""
    out = str(tmp_path / "stats")
    mp.spawn(_stats_worker, args=(WORLD, _free_port(), str(store_path), out), nprocs=WORLD, join=True)
    store = Store(store_path)
    n_train = len(store.rows("train"))
    res = [torch.load(f"{out}.{r}", weights_only=False) for r in range(WORLD)]
    for family in ("descriptors", "mel"):
        want = fit_statistics(load_split(store, "train", family, torch.device("cpu")), family)
        for r in range(WORLD):
            mean, std, n, has_val = res[r][family]
            torch.testing.assert_close(mean, want[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(std, want[1], rtol=1e-5, atol=1e-6)
            assert n == -(-n_train // WORLD)  # every rank the same, padded count
            assert has_val == (r == 0)


def test_ddp_training_matches_single_process(store_path: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): reaches the single-process test accuracy within 0.1."""
    # --batch-size is per process: 2 x 8 under DDP is the single process's 16 (same steps per epoch)
    common = ["--store", str(store_path), "--model", "cnn2d", "--filters", "8,16", "--kernels", "3x3,3x3",
              "--epochs", "8", "--batch-size", "8", "--lr", "0.005", "--patience", "0", "--seed", "1",
              "--device", "cpu"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    port = _free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD), "--master-addr",
         "127.0.0.1", "--master-port", str(port), "-m", "ser", "train", *common, "--out", str(tmp_path / "ddp")],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x 2 processes (DDP)" in proc.stderr
    assert proc.stdout.count("best epoch") == 1  # rank 0 alone reports

    cfg = TrainConfig(model="cnn2d", epochs=8, batch_size=16, lr=0.005, patience=0, seed=1,
                      hparams={"filters": "8,16", "kernels": "3x3,3x3"})
    train(store_path, cfg, tmp_path / "single", device="cpu", **QUIET)

    ckpt = load_checkpoint(tmp_path / "ddp" / "best.pt")
    assert not any(k.startswith("module.") for k in ckpt.model.state_dict())
    raw = torch.load(tmp_path / "ddp" / "best.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in raw["state_dict"])
    for name in ("best.pt", "last.pt", "history.csv", "curves.png"):
        assert (tmp_path / "ddp" / name).stat().st_size > 0
    acc_ddp = evaluate(tmp_path / "ddp" / "best.pt", split="test", device="cpu", **QUIET).metrics["accuracy"]
    acc_one = evaluate(tmp_path / "single" / "best.pt", split="test", device="cpu", **QUIET).metrics["accuracy"]
    print(f"test accuracy: ddp {acc_ddp:.3f}, single {acc_one:.3f}")
    assert acc_ddp > 0.8 and acc_one > 0.8, (acc_ddp, acc_one)
    assert abs(acc_ddp - acc_one) <= 0.1, (acc_ddp, acc_one)
    # the DDP run's input statistics are the whole train split's
    single = load_checkpoint(tmp_path / "single" / "best.pt")
    torch.testing.assert_close(ckpt.model.input_mean, single.model.input_mean, rtol=1e-5, atol=1e-6)


def test_ddp_refuses_sklearn_and_sweep(store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ser.errors import SerError
    from ser.experiments.sweep import run_sweep

    monkeypatch.setenv("WORLD_SIZE", "2")  # looks launched by torchrun; refused before joining a group
    with pytest.raises(SerError, match="scikit-learn"):
        train(store_path, TrainConfig(model="logreg"), tmp_path, device="cpu", **QUIET)
    with pytest.raises(SerError, match="sweep"):
        run_sweep(store_path, TrainConfig(model="cnn1d"), {"lr": ["0.1"]}, tmp_path, device="cpu", **QUIET)
