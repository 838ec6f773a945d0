"""Training input throughput: the project's input path against a naive DataLoader.

For each model family (cnn1d reads ``descriptors`` ``(rows, 193)``, cnn2d reads ``mel``
``(rows, 64, 251)``), on one CREMA-D-sized synthetic store (7,442 clips, split 70/30 then 5%
validation as in DESIGN.md, each train clip written with four augmented copies: 24,745 train
rows; random numbers: the input path does not care what they are):

- **input path**: batches per second of ready tensors on the training device (shuffled, batch
  64, normalised with the train statistics), for
  - *naive*: a ``torch.utils.data.Dataset`` whose ``__getitem__`` reads one row with h5py (the
    file opened lazily in each worker) and a ``DataLoader`` over it (batch 64, shuffle,
    4 workers); the main process moves each batch to the device and normalises it;
  - *resident*: ``ser.training.data`` with its default budget (the split fits, so it lives on the
    device and a batch is an index into it); the one-time load is timed separately;
  - *streamed*: ``ser.training.data`` forced to stream by a budget of 3 chunks of 2,048 rows
    (background-thread prefetch; pinned memory on CUDA);
  - *Store.read alone*: the streamed path's ceiling with one reader.

  Each is the median of ``--repeat`` windows of ``--seconds``, the paths interleaved.
- **training**: seconds per step and the epoch time of ``ser.training.loop.fit`` (the project's one
  loop). Where there is no GPU, ``fit`` runs 2 epochs over ``--cpu-steps`` batches of train
  rows and the second epoch's time is extrapolated to the whole split (plus the validation
  pass, timed on its own); with CUDA, ``fit`` runs 2 whole epochs. Also the busy fraction of
  the device while training from each input path: the share of wall time inside training steps
  (CUDA events on a GPU, the wall clock on CPU), and the projected wall time of a sweep.

Timed runs on shared machines belong under ``flock /tmp/ser-bench.lock``:

    flock /tmp/ser-bench.lock python benchmarks/train_throughput.py [--json results.json]

The store is built once (about 1.8 GB, under a minute) at ``--store`` and reused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ser.features.config import FeatureConfig, descriptor_names
from ser.training.data import SplitData, fit_statistics, format_size, load_rows, load_split
from ser.training.models import build_model
from ser.corpus.splits import SplitConfig
from ser.store import Store, StoreWriter
from ser.store.parts import PartData
from ser.training.device import pick_device
from ser.training.loop import TrainConfig, TrainData, evaluate_split, fit, make_optimizer

LABELS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
FAMILY_MODEL = {"descriptors": "cnn1d", "mel": "cnn2d"}


# -- the store --------------------------------------------------------------------------------
def make_cremad_sized_store(path: Path, *, n_clips: int = 7442, variants: int = 5, seed: int = 0,
                            log: Callable[[str], None] = print) -> Path:
    """A complete store shaped like CREMA-D featurized with the defaults: 30% test, 5% of the
    rest validation (clips), ``variants`` rows per train clip (original + augmentations)
    written next to each other, as featurize writes them. Random arrays, no audio."""
    rng = np.random.default_rng(seed)
    fc = FeatureConfig()
    names = descriptor_names(fc)
    clip_split = np.full(n_clips, "train", dtype=object)
    order = rng.permutation(n_clips)
    n_test = round(n_clips * 0.3)
    n_val = round((n_clips - n_test) * 0.05)
    clip_split[order[:n_test]] = "test"
    clip_split[order[n_test:n_test + n_val]] = "val"
    clip_label = rng.integers(0, len(LABELS), n_clips)
    augments = ["none", "noise", "stretch", "shift", "pitch"][:variants]
    rows_meta = []
    for c in range(n_clips):
        for a in (augments if clip_split[c] == "train" else ["none"]):
            rows_meta.append((c, a))
    n = len(rows_meta)
    clip = np.array([c for c, _ in rows_meta])
    meta = pd.DataFrame({
        "clip_id": [f"{1001 + c % 91}_{c:05d}" for c in clip], "path": [f"{1001 + c % 91}_{c:05d}.wav" for c in clip],
        "dataset": "synthetic", "speaker": [str(1001 + c % 91) for c in clip],
        "emotion": [LABELS[clip_label[c]] for c in clip], "label": clip_label[clip].astype(np.int64),
        "split": clip_split[clip].astype(str), "augment": [a for _, a in rows_meta],
        "duration_s": 2.5, "n_frames": fc.n_frames, "sentence": "", "intensity": "", "sex": "", "age": np.nan,
    })
    run_config = {"feature_config": fc.to_dict(), "split_config": SplitConfig().to_dict(), "dataset": "synthetic",
                  "data": "synthetic", "manifest": None, "emotions": None, "augment": augments[1:], "labels": LABELS}
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    w = StoreWriter(path, run_config=run_config, descriptor_names=names, overwrite=True)
    step = 1024
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        desc = rng.standard_normal((hi - lo, len(names)), dtype=np.float32)
        mel = rng.standard_normal((hi - lo, fc.n_mels, fc.n_frames), dtype=np.float32) * 10 - 40
        w.write(PartData(desc, mel, meta.iloc[lo:hi]))
    w.finish()
    log(f"built {path} ({n} rows, {format_size(path.stat().st_size)}) in {time.perf_counter() - t0:.0f}s")
    return path


def _store_ok(path: Path) -> bool:
    try:
        st = Store(path)
        return st.info["shapes"]["mel"][1:] == (64, 251) and len(st.rows("train")) > 20000
    except Exception:
        return False


# -- the naive input path ---------------------------------------------------------------------
class NaiveRows(torch.utils.data.Dataset):
    """One row per ``__getitem__``, read with h5py; the file is opened in each worker."""

    def __init__(self, path: Path, family: str, rows: np.ndarray, labels: np.ndarray) -> None:
        self.path, self.family, self.rows, self.labels = str(path), family, rows, labels
        self._ds = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._ds is None:
            import h5py

            self._ds = h5py.File(self.path, "r")[self.family]
        return torch.from_numpy(self._ds[int(self.rows[i])]), int(self.labels[i])


def naive_batches(store: Store, family: str, device: torch.device, mean: torch.Tensor, std: torch.Tensor, *,
                  batch_size: int, workers: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    rows = store.rows("train")
    labels = store.meta().loc[rows, "label"].to_numpy()
    dl = torch.utils.data.DataLoader(NaiveRows(store.path, family, rows, labels), batch_size=batch_size,
                                     shuffle=True, num_workers=workers,
                                     generator=torch.Generator().manual_seed(seed))
    mean, std = mean.to(device), std.to(device)
    while True:  # as many epochs as the caller takes
        for x, y in dl:
            yield (x.to(device) - mean) / std, y.to(device)


def project_batches(data: SplitData, device: torch.device, mean: torch.Tensor, std: torch.Tensor, *,
                    batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """What ``fit`` consumes: ``data.batches`` then ``SerNet.normalize``'s arithmetic."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = mean.to(device), std.to(device)
    while True:
        for x, y in data.batches(batch_size, shuffle=True, generator=gen):
            yield (x - mean) / std, y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device, *, seconds: float,
         min_batches: int = 20) -> dict[str, float]:
    """Batches/s and samples/s over a window that starts after the first batch (worker start-up
    and the first read are not counted)."""
    x, _ = next(batches)
    _sync(device)
    n = samples = 0
    t0 = time.perf_counter()
    while True:
        x, y = next(batches)
        n += 1
        samples += x.shape[0]
        if n >= min_batches and time.perf_counter() - t0 >= seconds:
            break
    _sync(device)
    dt = time.perf_counter() - t0
    return {"batches": n, "seconds": dt, "batches_per_s": n / dt, "samples_per_s": samples / dt}


def store_read_rate(store: Store, family: str, chunk_rows: int, batch_size: int, *, chunks: int = 4) -> float:
    """Batches/s that ``Store.read`` alone delivers in streamed-sized chunks of train rows: the
    most the streamed path can reach with one reader."""
    rows = store.rows("train")
    starts = np.linspace(0, max(len(rows) - chunk_rows, 0), chunks).astype(int)
    store.read(family, rows[starts[0]:starts[0] + chunk_rows])  # warm handle
    t0 = time.perf_counter()
    n = 0
    for lo in starts:
        n += store.read(family, rows[lo:lo + chunk_rows]).shape[0]
    return n / batch_size / (time.perf_counter() - t0)


# -- training ---------------------------------------------------------------------------------
def train_steps(model_name: str, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], data_shape: tuple[int, ...],
                mean: torch.Tensor, std: torch.Tensor, device: torch.device, *, steps: int) -> dict[str, float]:
    """``steps`` training steps as ``fit`` takes them (bf16 autocast on CUDA), fed by ``batches``
    (already normalised). ``busy``: the share of wall time inside steps: on CUDA the GPU time
    between events recorded at each step's start and end, on CPU the wall clock around each step."""
    cfg = TrainConfig(model=model_name)
    model = build_model(model_name, input_shape=data_shape, n_classes=len(LABELS), hparams=cfg.hparams,
                        mean=mean, std=std).to(device)
    opt = make_optimizer(cfg, model.parameters())
    amp = device.type == "cuda"
    model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x, normalized=True).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, cuDNN/oneDNN plans
        step(*next(batches))
    _sync(device)
    events: list[tuple[Any, Any]] = []
    busy_s = 0.0
    samples = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(x, y)
            end.record()
            events.append((start, end))
        else:
            s0 = time.perf_counter()
            step(x, y)
            busy_s += time.perf_counter() - s0
        samples += x.shape[0]
    _sync(device)
    wall = time.perf_counter() - t0
    if events:
        busy_s = sum(s.elapsed_time(e) for s, e in events) / 1000.0
    return {"steps": steps, "seconds": wall, "s_per_step": wall / steps, "samples_per_s": samples / wall,
            "busy": min(busy_s / wall, 1.0)}


def epoch_time(model_name: str, store: Store, family: str, train: SplitData, val: SplitData | None,
               mean: torch.Tensor, std: torch.Tensor, device: torch.device, *, cpu_steps: int,
               batch_size: int) -> dict[str, Any]:
    """The epoch time of ``fit``: measured over whole epochs on CUDA; on CPU, over ``cpu_steps``
    steps of the second of 2 epochs on a subset, extrapolated (+ the validation pass)."""
    shape = tuple(store.info["shapes"][family][1:])
    cfg = TrainConfig(model=model_name, epochs=2, batch_size=batch_size, patience=0, seed=0)
    steps_full = math.ceil(len(train) / batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        if device.type == "cuda":
            res = fit(cfg, TrainData(store, family, train, val, shape, mean, std), tmp, device=device,
                      log=lambda m: None)
            sec = res.history[1]["seconds"]
            return {"measured": "2 whole epochs (second one timed, validation included)", "epoch_s": sec,
                    "s_per_step": sec / steps_full, "samples_per_s": len(train) / sec}
        sub = load_rows(store, train.rows[:cpu_steps * batch_size], family, device)
        res = fit(cfg, TrainData(store, family, sub, None, shape, mean, std), tmp, device=device,
                  log=lambda m: None)
        per_step = res.history[1]["seconds"] / cpu_steps
        model = build_model(model_name, input_shape=shape, n_classes=len(LABELS), hparams=cfg.hparams,
                            mean=mean, std=std).to(device)
        t0 = time.perf_counter()
        if val is not None:
            evaluate_split(model, val)
        val_s = time.perf_counter() - t0
    return {"measured": f"{cpu_steps} steps of fit's second epoch, extrapolated to {steps_full} steps "
                        f"+ a timed validation pass ({val_s:.1f}s)",
            "epoch_s": per_step * steps_full + val_s, "s_per_step": per_step,
            "samples_per_s": batch_size / per_step}


# -- the machine ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                   .stdout.splitlines() if l.startswith("Model name"))
    except Exception:
        cpu = platform.processor() or "unknown"
    try:
        mem = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except Exception:
        mem = 0
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "ram": format_size(mem), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg": [round(v, 2) for v in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory"] = format_size(torch.cuda.get_device_properties(0).total_memory)
    return info


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "ser-bench-input" / "cremad-sized.h5")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--families", default="descriptors,mel")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4, help="naive DataLoader workers")
    ap.add_argument("--seconds", type=float, default=6.0, help="timing window per input path and run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per input path (the median is reported)")
    ap.add_argument("--stream-chunk-rows", type=int, default=2048)
    ap.add_argument("--cpu-steps", type=int, default=6, help="CPU: fit steps timed per model")
    ap.add_argument("--busy-steps", type=int, default=None,
                    help="training steps per input path for the busy fraction [CUDA 200, CPU 6]")
    ap.add_argument("--no-train", action="store_true", help="input path only")
    ap.add_argument("--sweep-configs", type=int, default=9, help="sweep size for the projection (3 optimizers x 3 lr)")
    ap.add_argument("--sweep-epochs", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    device = pick_device(args.device)
    if not _store_ok(args.store):
        make_cremad_sized_store(args.store)
    store = Store(args.store)
    info = machine()
    print(f"machine: {info}")
    print(f"store: {args.store} ({format_size(args.store.stat().st_size)}); rows "
          + ", ".join(f"{s} {len(store.rows(s))}" for s in ("train", "val", "test"))
          + "; the file is in the page cache after the first pass (warm reads for every path)")
    busy_steps = args.busy_steps or (200 if device.type == "cuda" else 6)
    results: dict[str, Any] = {"machine": info, "device": str(device), "input": [], "train": []}
    b = args.batch_size
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        model_name = FAMILY_MODEL[family]
        row_bytes = int(np.prod(store.info["shapes"][family][1:])) * 4
        t0 = time.perf_counter()
        resident = load_split(store, "train", family, device)
        _sync(device)
        load_s = time.perf_counter() - t0
        assert resident.x is not None, f"the train split did not fit the default budget: {resident.mode}"
        mean, std = fit_statistics(resident, family)
        budget = 3 * args.stream_chunk_rows * row_bytes
        streamed = load_split(store, "train", family, device, memory_budget_bytes=budget)
        paths = {
            f"naive DataLoader ({args.workers} workers)":
                (lambda: naive_batches(store, family, device, mean, std, batch_size=b, workers=args.workers, seed=0), None),
            "project, resident": (lambda: project_batches(resident, device, mean, std, batch_size=b, seed=0), load_s),
            f"project, streamed ({streamed.chunk_rows}-row chunks)":
                (lambda: project_batches(streamed, device, mean, std, batch_size=b, seed=0), None),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(args.repeat):  # interleaved, so every path sees the same machine weather
            for name, (make, _setup) in paths.items():
                it = make()
                runs[name].append(rate(it, device, seconds=args.seconds))
                it.close()
        naive_rate = None
        for name, (make, setup_s) in paths.items():
            bps = sorted(r["batches_per_s"] for r in runs[name])
            med = float(np.median(bps))
            naive_rate = naive_rate or med
            row = {"family": family, "path": name, "batches_per_s": round(med, 1),
                   "batches_per_s_runs": [round(v, 1) for v in bps],
                   "samples_per_s": round(med * b), "vs_naive": round(med / naive_rate, 1),
                   "load_s": round(setup_s, 2) if setup_s is not None else None}
            results["input"].append(row)
            print(f"{family:12s} {name:38s} {med:9.1f} batches/s {med * b:10.0f} samples/s  x{row['vs_naive']:<6}"
                  f" runs {row['batches_per_s_runs']}"
                  + (f" (one-time load {setup_s:.1f}s)" if setup_s is not None else ""), flush=True)
        ceiling = store_read_rate(store, family, streamed.chunk_rows, b)
        results["input"].append({"family": family, "path": "Store.read alone (streamed ceiling)",
                                 "batches_per_s": round(ceiling, 1), "samples_per_s": round(ceiling * b)})
        print(f"{family:12s} {'Store.read alone (streamed ceiling)':38s} {ceiling:9.1f} batches/s "
              f"{ceiling * b:10.0f} samples/s", flush=True)
        print(f"{'':12s} streamed path: {streamed.mode}; peak rows held {streamed.peak_rows_held}")
        if args.no_train:
            continue
        shape = tuple(store.info["shapes"][family][1:])
        busy = {}
        for name, make in (("naive", lambda: naive_batches(store, family, device, mean, std, batch_size=b,
                                                            workers=args.workers, seed=0)),
                           ("resident", lambda: project_batches(resident, device, mean, std, batch_size=b, seed=0))):
            it = make()
            busy[name] = train_steps(model_name, it, shape, mean, std, device, steps=busy_steps)
            it.close()
        val = load_split(store, "val", family, device)
        ep = epoch_time(model_name, store, family, resident, val, mean, std, device, cpu_steps=args.cpu_steps,
                        batch_size=b)
        sweep_h = args.sweep_configs * args.sweep_epochs * ep["epoch_s"] / 3600
        row = {"family": family, "model": model_name, "device": str(device), **{k: (round(v, 3) if isinstance(v, float) else v)
                                                                            for k, v in ep.items()},
               "busy_naive": round(busy["naive"]["busy"], 3), "busy_resident": round(busy["resident"]["busy"], 3),
               "train_samples_per_s_naive": round(busy["naive"]["samples_per_s"], 1),
               "train_samples_per_s_resident": round(busy["resident"]["samples_per_s"], 1),
               "busy_steps": busy_steps,
               "sweep": f"{args.sweep_configs} configs x {args.sweep_epochs} epochs", "sweep_hours": round(sweep_h, 2)}
        results["train"].append(row)
        print(f"{family:12s} {model_name} on {device}: {ep['s_per_step']:.3f} s/step, {ep['samples_per_s']:.0f} samples/s, "
              f"epoch {ep['epoch_s']:.1f}s [{ep['measured']}]; busy fraction over {busy_steps} steps: "
              f"naive feed {busy['naive']['busy']:.2f} ({busy['naive']['samples_per_s']:.0f} samples/s), "
              f"resident {busy['resident']['busy']:.2f} ({busy['resident']['samples_per_s']:.0f} samples/s); "
              f"sweep of {row['sweep']}: {sweep_h:.1f} h without early stopping", flush=True)
        del resident, streamed, val
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at the end: {results['machine']['load_avg_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
