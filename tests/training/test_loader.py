"""The input path: resident or streamed splits, prefetch, memory budgets, determinism."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ser.training.data as loader_mod
from array_store import make_array_store
from ser.cli import main
from ser.errors import SerError
from ser.training.data import SplitData, default_memory_budget, fit_statistics, load_split, parse_size
from ser.store import Store
from ser.training.loop import TrainConfig, load_train_data, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 300 rows, 180 of them train; descriptors (193,) = 772 B a row, mel (16, 32) = 2 KB a row
    return make_array_store(tmp_path_factory.mktemp("loader") / "arr.h5", per_class=100, seed=3)


def _row_ids(store: Store, family: str, x: torch.Tensor) -> list[int]:
    """Which store row each row of ``x`` is (random rows are unique byte strings)."""
    full = store.read(family, np.arange(store.n_rows))
    where = {full[i].tobytes(): i for i in range(full.shape[0])}
    return [where[r.numpy().tobytes()] for r in x]


def _epoch(data: SplitData, batch_size: int, seed: int | None) -> tuple[list[int], list[int]]:
    """(store rows in the order seen, batch sizes) of one pass."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    xs, sizes = [], []
    for x, y in data.batches(batch_size, shuffle=seed is not None, generator=gen):
        assert x.shape[0] == y.shape[0]
        xs.append(x)
        sizes.append(x.shape[0])
    return _row_ids(data.store, data.family, torch.cat(xs)), sizes


def _streamed(store: Store, family: str, chunk_rows: int, prefetch: int = 1) -> SplitData:
    row_bytes = int(np.prod(store.info["shapes"][family][1:])) * 4
    budget = (prefetch + 2) * chunk_rows * row_bytes  # the loader sizes chunks from it
    data = load_split(store, "train", family, CPU, memory_budget_bytes=budget, prefetch=prefetch)
    assert data.x is None and data.chunk_rows == chunk_rows, data.mode
    return data


def test_a_split_that_fits_is_resident_and_shuffled_by_the_seed(store_path: Path) -> None:
    store = Store(store_path)
    data = load_split(store, "train", "mel", CPU)  # default budget: half the available RAM
    assert data.x is not None and data.mode.startswith("resident on cpu")
    rows = store.rows("train").tolist()
    seen, sizes = _epoch(data, 32, seed=5)
    assert sorted(seen) == rows and seen != rows
    assert sizes == [32] * 5 + [20]
    assert _epoch(data, 32, seed=5)[0] == seen and _epoch(data, 32, seed=6)[0] != seen
    assert _epoch(data, 32, seed=None)[0] == rows


@pytest.mark.parametrize("family, chunk_rows, batch_size", [
    ("descriptors", 16, 7),   # chunks not a multiple of the batch: batches straddle chunks
    ("mel", 5, 8),            # chunks smaller than a batch
    ("mel", 40, 16),
])
def test_streamed_epochs_see_every_row_once_within_the_chunk_bound(store_path: Path, family: str,
                                                                   chunk_rows: int, batch_size: int) -> None:
    store = Store(store_path)
    data = _streamed(store, family, chunk_rows)
    rows = store.rows("train").tolist()
    for seed in (1, 2):
        seen, sizes = _epoch(data, batch_size, seed)
        assert sorted(seen) == rows, "every train row exactly once per epoch"
        assert sizes[:-1] == [batch_size] * (len(sizes) - 1) and 0 < sizes[-1] <= batch_size
        assert seen != rows
    assert 0 < data.peak_rows_held <= (data.prefetch + 2) * chunk_rows
    assert data._held.now == 0  # every chunk freed when the epoch ended
    assert data.mode.startswith("streamed") and f"chunks of {chunk_rows} rows" in data.mode


def test_streamed_order_is_a_function_of_the_seed_and_shuffles_chunks_and_rows(store_path: Path) -> None:
    store = Store(store_path)
    data = _streamed(store, "descriptors", 20)
    rows = store.rows("train")
    a, _ = _epoch(data, 10, seed=11)
    assert _epoch(data, 10, seed=11)[0] == a
    assert _epoch(data, 10, seed=12)[0] != a
    pos = {r: i for i, r in enumerate(rows.tolist())}  # store row -> position in the split
    chunk_of = [pos[r] // 20 for r in a]
    first_chunks = list(dict.fromkeys(chunk_of))
    assert first_chunks != sorted(first_chunks), "chunk order is shuffled"
    # rows come chunk by chunk (contiguous reads), shuffled inside each chunk
    assert all(chunk_of[i] == first_chunks[i // 20] for i in range(len(a)))
    assert [pos[r] for r in a[:20]] != sorted(pos[r] for r in a[:20])
    # unshuffled: row order, the same as the resident path's
    assert _epoch(data, 10, seed=None)[0] == rows.tolist()


def test_prefetch_reads_the_next_chunk_in_a_background_thread(store_path: Path, monkeypatch) -> None:
    store = Store(store_path)
    data = _streamed(store, "descriptors", 30)
    reads: list[tuple[int, str]] = []
    second_read = threading.Event()
    real_read = Store.read

    def spy(self, family, rows):
        reads.append((int(rows[0]), threading.current_thread().name))
        if len(reads) == 2:
            second_read.set()
        return real_read(self, family, rows)

    monkeypatch.setattr(Store, "read", spy)
    it = data.batches(10, shuffle=False)
    next(it)  # the consumer holds chunk 0 and has not asked for more: the reader must go ahead alone
    assert second_read.wait(timeout=10), "the next chunk was not read while the current one was consumed"
    assert {name for _, name in reads} == {"ser-prefetch"}
    assert len(reads) <= 1 + 2, "at most prefetch + 1 chunks read ahead"
    rest = list(it)
    assert sum(x.shape[0] for x, _ in rest) + 10 == len(data)


def test_an_abandoned_epoch_stops_its_reader_and_read_errors_reach_the_consumer(store_path: Path,
                                                                                monkeypatch) -> None:
    store = Store(store_path)
    data = _streamed(store, "descriptors", 8)
    it = data.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0))
    next(it)
    it.close()
    assert not any(t.name == "ser-prefetch" for t in threading.enumerate())
    assert data._held.now == 0

    def broken(self, family, rows):
        raise OSError("disk went away")

    monkeypatch.setattr(Store, "read", broken)
    with pytest.raises(OSError, match="disk went away"):
        list(data.batches(4, shuffle=False))
    assert not any(t.name == "ser-prefetch" for t in threading.enumerate())


def test_the_chunked_resident_fill_used_on_cuda_gives_the_same_tensor(store_path: Path, monkeypatch) -> None:
    """CUDA fills a resident split chunk by chunk through the prefetch thread; the same code
    runs here on CPU (without pinning) and must give exactly the one-shot read."""
    store = Store(store_path)
    data = load_split(store, "train", "mel", CPU)
    monkeypatch.setattr(loader_mod, "RESIDENT_FILL_ROWS", 17)
    filled = loader_mod._read_resident(data, chunked=True)
    assert torch.equal(filled, data.x)
    assert not data._pin and data.peak_device_rows_held == 0


@pytest.mark.parametrize("family", ["descriptors", "mel"])
def test_statistics_are_the_same_resident_or_streamed(store_path: Path, family: str) -> None:
    store = Store(store_path)
    m1, s1 = fit_statistics(load_split(store, "train", family, CPU), family)
    m2, s2 = fit_statistics(_streamed(store, family, 7), family)
    torch.testing.assert_close(m1, m2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)


def test_one_budget_covers_train_and_validation(store_path: Path) -> None:
    store = Store(store_path)
    row = 193 * 4
    n_train, n_val = len(store.rows("train")), len(store.rows("val"))
    default = load_train_data(store, "mel", CPU)  # a fraction of the available RAM: plenty
    assert default.train.mode.startswith("resident on cpu") and default.val.x is not None
    both = load_train_data(store, "descriptors", CPU, memory_budget_bytes=(n_train + n_val) * row)
    assert both.train.x is not None and both.val.x is not None
    # train takes the budget; validation must stream within what is left
    tight = load_train_data(store, "descriptors", CPU, memory_budget_bytes=(n_train + n_val // 2) * row)
    assert tight.train.x is not None and tight.val.x is None
    assert tight.val.budget_bytes == (n_val // 2) * row
    small = load_train_data(store, "descriptors", CPU, memory_budget_bytes=40 * row)
    assert small.train.x is None and small.train.chunk_rows == 40 // 3


def test_a_streamed_store_trains_and_every_epoch_sees_every_row_once(store_path: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A store larger than the budget trains: the split is streamed, the loop sees each train
    row once per epoch, the chunks never outgrow their bound, and the model learns."""
    store = Store(store_path)
    n_train = len(store.rows("train"))
    epochs: list[list[torch.Tensor]] = []
    splits: list[SplitData] = []
    real_batches = SplitData.batches

    def spy(self, batch_size, *, shuffle, generator=None, keep=None):
        if shuffle:  # the training pass (statistics and validation are unshuffled)
            epochs.append([])
            splits.append(self)
        for x, y in real_batches(self, batch_size, shuffle=shuffle, generator=generator, keep=keep):
            if shuffle:
                epochs[-1].append(x)
            yield x, y

    monkeypatch.setattr(SplitData, "batches", spy)
    logs: list[str] = []
    budget = 3 * 12 * 2048  # mel rows are 2 KB: chunks of 12 rows, 180 train rows
    cfg = TrainConfig(model="cnn2d", epochs=4, batch_size=16, lr=3e-3, patience=0, seed=4,
                      hparams={"filters": "8,16", "kernels": "3x3,3x3"})
    res = train(store_path, cfg, tmp_path, device="cpu", memory_budget_bytes=budget, log=logs.append)
    assert any(m.startswith("input: train") and "streamed" in m and "chunks of 12 rows" in m for m in logs), logs
    assert any("[streamed" in m for m in logs), "fit logs the path that ran"
    assert len(epochs) == 4
    rows = store.rows("train").tolist()
    orders = []
    for batches in epochs:
        seen = _row_ids(store, "mel", torch.cat(batches))
        assert sorted(seen) == rows and len(seen) == n_train
        orders.append(seen)
    assert len({tuple(o) for o in orders}) == 4, "a new order every epoch"
    assert splits[0].peak_rows_held <= 3 * 12
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.best_val_accuracy > 0.6  # chance is 1/3


def test_the_streamed_path_is_deterministic_from_the_seed_in_training(store_path: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0, seed=9,
                      hparams={"filters": "4", "kernels": "3x3"})
    a = train(store_path, cfg, tmp_path / "a", device="cpu", memory_budget_bytes=3 * 10 * 2048, log=lambda m: None)
    b = train(store_path, cfg, tmp_path / "b", device="cpu", memory_budget_bytes=3 * 10 * 2048, log=lambda m: None)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_parse_size_and_default_budget() -> None:
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 GiB") == int(1.5 * 2**30)
    assert parse_size("4096") == 4096 and parse_size(100) == 100
    assert parse_size("64kib") == 65536
    for bad in ("lots", "12 parsecs", "-5MB", "0", ""):
        with pytest.raises(SerError, match="memory size"):
            parse_size(bad)
    budget = default_memory_budget("cpu")
    assert 0 < budget <= loader_mod.available_host_memory()


def test_cli_memory_budget(store_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["train", "--store", str(store_path), "--model", "cnn2d", "--filters", "4", "--kernels", "3x3",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    r = runner.invoke(main, args + ["--out", str(tmp_path / "a"), "--memory-budget", "60KB"])
    assert r.exit_code == 0, r.output
    assert "streamed" in r.output and "budget 60 kB" in r.output
    r = runner.invoke(main, args + ["--out", str(tmp_path / "c"), "--memory-budget", "plenty"])
    assert r.exit_code == 2 and "memory size" in r.output


def test_one_row_per_clip_keeps_exactly_one_variant_of_each_clip_drawn_by_the_seed() -> None:
    from ser.training.data import one_row_per_clip

    clips = np.array(["b", "a", "b", "c", "a", "b", "c", "d"])
    draws = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        keep = one_row_per_clip(clips, gen)
        assert sorted(clips[keep]) == ["a", "b", "c", "d"]
        draws.append(tuple(np.flatnonzero(keep)))
    assert len(set(draws)) > 5  # a new choice each epoch, every variant of "b" chosen some time
    assert {i for d in draws for i in d} == set(range(len(clips)))
    again = torch.Generator().manual_seed(0)
    assert [tuple(np.flatnonzero(one_row_per_clip(clips, again))) for _ in range(20)] == draws


@pytest.mark.parametrize("streamed", [False, True])
def test_batches_with_a_keep_mask_yield_exactly_the_kept_rows(store_path: Path, streamed: bool) -> None:
    store = Store(store_path)
    data = _streamed(store, "mel", 16) if streamed else load_split(store, "train", "mel", CPU)
    keep = np.random.default_rng(1).random(len(data)) < 0.4
    xs = [x for x, _ in data.batches(7, shuffle=True, generator=torch.Generator().manual_seed(2), keep=keep)]
    seen = _row_ids(store, "mel", torch.cat(xs))
    assert sorted(seen) == sorted(data.rows[keep].tolist())
    with pytest.raises(SerError, match="keep must mark each"):
        next(data.batches(7, shuffle=False, keep=keep[:-1]))
