"""The one training loop, for every model, reading the store only (never audio).

``fit`` trains one configuration; ``sweep`` trains a grid from one load of the store.
Early stopping watches validation macro-F1; ``best.pt`` and ``last.pt`` carry everything
evaluate and predict need (see :mod:`ser.training.checkpoint`).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ser.training.checkpoint import save_checkpoint
from ser.errors import SerError
from ser.training.ddp import (DistContext, all_reduce_sum, all_reduce_sum_on, broadcast_flag, cleanup,
                          init_distributed, launched_by_torchrun, local_world_size, shard_rows, unpadded_shard)
from ser.training.data import (SplitData, default_memory_budget, fit_statistics, load_rows, load_split, reduced_statistics,
                     split_footprint)
from ser.training.models import build_model, get_spec, resolve_hparams
from ser.store.writer import Store

OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; saved in the checkpoint."""

    model: str = "cnn1d"
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 100
    batch_size: int = 64
    seed: int = 42
    patience: int = 20            # epochs without a better val macro-F1 before stopping; 0: never
    weight_decay: float = 0.0
    momentum: float = 0.9         # SGD only
    spec_augment: bool = False    # time/frequency masks on mel batches, at train time
    mixup: float = 0.0            # mixup Beta(alpha, alpha); 0 disables
    speaker_norm: bool = False    # standardise each speaker by their own clips' statistics (speakers.py)
    hparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_spec(self.model)
        if self.optimizer not in OPTIMIZERS:
            raise SerError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.lr <= 0 or self.epochs <= 0 or self.batch_size <= 0:
            raise SerError("lr, epochs and batch size must be positive")
        object.__setattr__(self, "hparams", resolve_hparams(self.model, self.hparams))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SerError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise SerError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def spec_augment(x: torch.Tensor, generator: torch.Generator, *, freq_width: int = 8,
                 time_width: int = 20, n_masks: int = 2) -> torch.Tensor:
    """SpecAugment-style masking of normalised mel batches ``(B, mels, frames)``: masked cells
    become 0 (the training mean). Drawn per example from ``generator``."""
    b, h, w = x.shape
    dev = x.device
    x = x.clone()
    for width, size, axis in ((freq_width, h, 1), (time_width, w, 2)):
        for _ in range(n_masks):
            widths = torch.randint(0, min(width, size) + 1, (b,), generator=generator)
            starts = (torch.rand(b, generator=generator) * (size - widths + 1).float()).long()
            pos = torch.arange(size)
            mask = (pos[None, :] >= starts[:, None]) & (pos[None, :] < (starts + widths)[:, None])
            mask = mask.to(dev)
            x = x.masked_fill(mask[:, :, None] if axis == 1 else mask[:, None, :], 0.0)
    return x


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    macro_f1: float


@torch.no_grad()
def predict_logits(model: nn.Module, data: SplitData, *, batch_size: int = 512,
                   amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (k, classes), labels (k,))`` in row order, on the CPU."""
    model.eval()
    outs, ys = [], []
    for x, y in data.batches(batch_size, shuffle=False):
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
            outs.append(model(x).float().cpu())
        ys.append(y.cpu())
    return torch.cat(outs), torch.cat(ys)


def evaluate_split(model: nn.Module, data: SplitData, *, amp: bool = False) -> EpochStats:
    from sklearn.metrics import f1_score

    logits, y = predict_logits(model, data, amp=amp)
    loss = float(nn.functional.cross_entropy(logits, y))
    pred = logits.argmax(1)
    return EpochStats(loss=loss, accuracy=float((pred == y).float().mean()),
                      macro_f1=float(f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0)))


@dataclass
class TrainData:
    """A store's train and validation splits, loaded once and shared by every run of a sweep."""

    store: Store
    family: str
    train: SplitData
    val: SplitData | None
    input_shape: tuple[int, ...]
    mean: torch.Tensor
    std: torch.Tensor


def load_train_data(store: Store, family: str, device: torch.device, *,
                    memory_budget_bytes: int | None = None, speaker_norm: bool = False,
                    ctx: DistContext | None = None) -> TrainData:
    """Load train/val rows for ``family`` and fit input statistics on train rows only.

    One memory budget (:func:`ser.training.data.default_memory_budget` of the device when None)
    covers both splits: train is resident if it fits, validation gets what train left.
    A streamed split holds chunks only while it is iterated, and train and validation are
    never iterated at once, so each streamed split may use the whole of what is left.

    Data-parallel (``ctx`` enabled): this rank reads only its shard of the train rows
    (:func:`ser.training.ddp.shard_rows`, padded so every rank has as many), the input statistics
    are the global train statistics (sums all-reduced over the ranks' unpadded shards), and
    only rank 0 loads validation (whole, unsharded). The default budget on the CPU is shared by
    the processes of a node.
    """
    ctx = ctx or DistContext()
    if memory_budget_bytes is not None:
        budget = int(memory_budget_bytes)
    else:
        budget = default_memory_budget(device)
        if ctx.enabled and device.type == "cpu":
            budget //= local_world_size()
    transform = None
    if speaker_norm:
        from ser.training.speakers import store_transform

        transform = store_transform(store, family)
    if not ctx.enabled:
        train = load_split(store, "train", family, device, memory_budget_bytes=budget, transform=transform)
    else:
        all_rows = store.rows("train")
        if len(all_rows) < ctx.world_size:
            raise SerError(f"{store.path} has {len(all_rows)} training rows, fewer than the {ctx.world_size} "
                           "data-parallel processes")
        train = load_rows(store, shard_rows(all_rows, ctx), family, device, memory_budget_bytes=budget,
                          transform=transform)
    if len(train) == 0:
        raise SerError(f"{store.path} has no training rows (was it featurized with --test-size 1.0?)")
    left = max(budget - split_footprint(train), 1)
    if ctx.is_main:
        val = load_split(store, "val", family, device, memory_budget_bytes=left, transform=transform)
    else:  # rank 0 alone validates
        val = load_rows(store, np.zeros(0, dtype=np.int64), family, device, memory_budget_bytes=left)
    if not ctx.enabled:
        mean, std = fit_statistics(train, family)
    else:
        own = unpadded_shard(store.rows("train"), ctx)
        first = np.r_[True, np.diff(train.rows) != 0]  # padding may repeat a row: count it once
        keep = first & np.isin(train.rows, own)
        mean, std = reduced_statistics(train, family, keep=keep, reduce=all_reduce_sum_on(device, ctx))
    shape = tuple(store.info["shapes"][family][1:])
    return TrainData(store, family, train, val if len(val) else None, shape, mean, std)


@dataclass
class FitResult:
    out_dir: Path
    best_epoch: int
    best_val_accuracy: float
    best_val_macro_f1: float
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]]


def fit(cfg: TrainConfig, data: TrainData, out_dir: str | Path, *, device: torch.device,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), resume: bool = False,
        ctx: DistContext | None = None) -> FitResult:
    """Train one configuration; writes best.pt, last.pt, history.csv and curves.png to ``out_dir``.

    ``last.pt`` also carries what continuing needs: optimizer state, epoch, early-stopping state
    (best score, stale epochs) and the RNG states (the shuffling generator, torch's global RNG).
    With ``resume`` a run continues from ``out_dir/last.pt`` (same configuration; ``epochs``
    may grow); on the CPU, with deterministic algorithms, the resumed run's history and weights
    equal an uninterrupted run's with the same seed. Without a last.pt it starts from epoch 1.

    Data-parallel (``ctx`` enabled, ``data`` loaded with the same ``ctx``): the model is wrapped
    in DistributedDataParallel, each rank shuffles its own shard with seed ``seed + rank``, every
    rank takes the same number of steps, and rank 0 alone validates, logs and writes the files
    (the bare module's weights); its early-stopping decision is broadcast to every rank. Other
    ranks return a result with an empty history.
    """
    from ser.training.checkpoint import load_resume_state

    ctx = ctx or DistContext()
    if ctx.enabled:
        if resume:
            raise SerError("--resume is not supported under torchrun yet; resume in one process")
        if not ctx.is_main:
            log = lambda m: None  # noqa: E731
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SerError(f"--out {out_dir} exists and is not a folder")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    gen = torch.Generator().manual_seed(cfg.seed + ctx.rank)  # each rank's own within-shard order
    spec = get_spec(cfg.model)
    if spec.family != data.family:
        raise SerError(f"model {cfg.model} reads {spec.family}, the data loaded is {data.family}")
    labels = data.store.labels
    ckpt_args = dict(model_name=cfg.model, hparams=cfg.hparams, family=data.family, labels=labels,
                     feature_config=data.store.feature_config, input_shape=data.input_shape,
                     train_config=cfg.to_dict(), store=data.store)
    if spec.trainer == "sklearn":  # one deterministic fit: resuming it is fitting it again
        if ctx.enabled:
            raise SerError(f"{cfg.model} is a scikit-learn model: train it in one process, not under torchrun")
        return _fit_classic(cfg, data, out_dir, device=device, ckpt_args=ckpt_args, log=log)
    model = build_model(cfg.model, input_shape=data.input_shape, n_classes=len(labels),
                        hparams=cfg.hparams, mean=data.mean, std=data.std).to(device)
    net: nn.Module = model  # what the training steps call: the DDP wrapper when data-parallel
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = make_optimizer(cfg, net.parameters())
    amp = device.type == "cuda"
    loss_fn = nn.CrossEntropyLoss()
    history: list[dict[str, Any]] = []
    best = (-1.0, -1.0, 0)  # (val macro-F1, val accuracy, epoch)
    stale = 0
    first = 1
    state = load_resume_state(out_dir / "last.pt", cfg.to_dict(), data.store) if resume else None
    if resume and state is None:
        log(f"no {out_dir / 'last.pt'} to resume from; starting at epoch 1")
    if state is not None:
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        history, best, stale = state["history"], state["best"], state["stale"]
        gen.set_state(state["rng_shuffle"])
        torch.set_rng_state(state["rng_torch"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        first = state["epoch"] + 1
        log(f"resuming {out_dir} after epoch {state['epoch']} (best so far: epoch {best[2]})")
    log(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {device}"
        + (f" x {ctx.world_size} processes (DDP): {len(data.train)} train rows per rank" if ctx.enabled
           else f": {len(data.train)} train rows") + f" [{data.train.mode}], "
        f"{len(data.val) if data.val else 0} val rows; {cfg.optimizer} lr={cfg.lr} batch={cfg.batch_size}")

    def resume_state(epoch: int) -> dict[str, Any]:
        """Plain data and tensors only: last.pt still loads with weights_only=True."""
        return {"resume": {
            "epoch": epoch, "optimizer": opt.state_dict(), "best": [float(best[0]), float(best[1]), int(best[2])],
            "stale": stale, "rng_shuffle": gen.get_state(), "rng_torch": torch.get_rng_state(),
            "rng_cuda": list(torch.cuda.get_rng_state_all()) if device.type == "cuda" else [],
        }}

    t_start = time.perf_counter()
    finished = bool(history) and ((cfg.patience and stale >= cfg.patience) or first > cfg.epochs)
    if finished:
        log(f"{out_dir} already finished at epoch {first - 1}; nothing to resume")
    deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":  # bit-identical reruns and resumes on the CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
    saved = first - 1  # the epoch last.pt holds (0: none)
    try:
        for epoch in range(first, cfg.epochs + 1):
            if finished:
                break
            t0 = time.perf_counter()
            net.train()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            seen = 0
            for x, y in data.train.batches(cfg.batch_size, shuffle=True, generator=gen):
                if x.shape[0] < 2:  # BatchNorm cannot train on one row
                    continue
                x = model.normalize(x)
                if cfg.spec_augment and data.family == "mel":
                    x = spec_augment(x, gen)
                targets = nn.functional.one_hot(y, len(labels)).float()
                if cfg.mixup > 0:
                    lam = float(np.random.default_rng(cfg.seed * 100003 + epoch * 7919 + seen).beta(cfg.mixup, cfg.mixup))
                    perm = torch.randperm(x.shape[0], generator=gen).to(device)
                    x = lam * x + (1 - lam) * x[perm]
                    targets = lam * targets + (1 - lam) * targets[perm]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = net(x, normalized=True)
                    loss = loss_fn(logits.float(), targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.detach() * x.shape[0]
                correct += (logits.argmax(1) == y).sum()
                seen += x.shape[0]
            if ctx.enabled:  # over every rank's rows (the padded shards), so all ranks agree
                sums = all_reduce_sum(torch.stack([total_loss.float(), correct.float(),
                                                   torch.tensor(float(seen), device=device)]), ctx)
                total_loss, correct, seen = sums[0], sums[1], int(round(float(sums[2])))
            train_loss = float(total_loss) / max(seen, 1)
            train_acc = float(correct) / max(seen, 1)
            if not np.isfinite(train_loss):
                raise SerError(f"training diverged at epoch {epoch} (loss {train_loss}); try a smaller --lr")
            if not ctx.is_main:  # rank 0 validates, saves and decides; the others wait for its word
                if broadcast_flag(False, ctx, device):
                    break
                continue
            val = evaluate_split(model, data.val, amp=amp) if data.val else None
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val.loss if val else float("nan"),
                   "val_accuracy": val.accuracy if val else float("nan"),
                   "val_macro_f1": val.macro_f1 if val else float("nan"),
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            score = (val.macro_f1, val.accuracy) if val else (train_acc, train_acc)
            improved = score > tuple(best[:2])
            if improved:
                best = (score[0], score[1], epoch)
                stale = 0
                save_checkpoint(out_dir / "best.pt", model=model, history=history, epoch=epoch, **ckpt_args)
            else:
                stale += 1
            # last.pt after best.pt: a run killed between the two redoes this epoch, identically
            save_checkpoint(out_dir / "last.pt", model=model, history=history, epoch=epoch,
                            extra=resume_state(epoch), **ckpt_args)
            saved = epoch
            log(f"epoch {epoch:3d}/{cfg.epochs}  loss {train_loss:.4f}  acc {train_acc:.3f}"
                + (f"  val loss {val.loss:.4f} acc {val.accuracy:.3f} macro-F1 {val.macro_f1:.3f}" if val else "")
                + f"  {row['seconds']:.1f}s" + ("  *" if improved else ""))
            stop = bool(cfg.patience and stale >= cfg.patience)
            if ctx.enabled:
                stop = broadcast_flag(stop, ctx, device)
            if stop:
                log(f"early stop: no better validation macro-F1 for {cfg.patience} epochs")
                break
    except KeyboardInterrupt:
        if ctx.is_main:
            log(f"\ninterrupted: {out_dir / 'last.pt'} holds epoch {saved}; run the same command with --resume "
                "to continue from there" if saved else "\ninterrupted before the first epoch ended")
        raise
    finally:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(deterministic)
    if not ctx.is_main:
        return FitResult(out_dir=out_dir, best_epoch=0, best_val_accuracy=float("nan"),
                         best_val_macro_f1=float("nan"), epochs_run=0,
                         seconds=time.perf_counter() - t_start, history=[])
    _write_history(out_dir, history)
    return FitResult(out_dir=out_dir, best_epoch=int(best[2]), best_val_accuracy=float(best[1]),
                     best_val_macro_f1=float(best[0]), epochs_run=len(history),
                     seconds=time.perf_counter() - t_start, history=history)


def _fit_classic(cfg: TrainConfig, data: TrainData, out_dir: Path, *, device: torch.device,
                 ckpt_args: dict[str, Any], log: Callable[[str], None]) -> "FitResult":
    """Fit a scikit-learn baseline once on the standardised training rows; one history row."""
    from ser.training.baselines import fit_classic
    from ser.training.models import SerNet

    t0 = time.perf_counter()
    x = data.train.x if data.train.x is not None else torch.cat(
        [xb for xb, _ in data.train.batches(8192, shuffle=False)])  # row order, like the labels
    x = ((x.cpu() - data.mean) / data.std).numpy()
    y = data.train.labels.cpu().numpy()
    log(f"fitting {cfg.model} ({', '.join(f'{k}={v}' for k, v in cfg.hparams.items())}) on {len(y)} train rows")
    try:
        body, hp = fit_classic(cfg.model, x, y, len(data.store.labels), cfg.hparams, cfg.seed)
    except ValueError as exc:
        raise SerError(f"{cfg.model}: {exc}") from None
    model = SerNet(body, data.mean, data.std).to(device).eval()
    train_stats = evaluate_split(model, data.train)
    val = evaluate_split(model, data.val) if data.val else None
    row = {"epoch": 1, "train_loss": train_stats.loss, "train_accuracy": train_stats.accuracy,
           "val_loss": val.loss if val else float("nan"), "val_accuracy": val.accuracy if val else float("nan"),
           "val_macro_f1": val.macro_f1 if val else float("nan"), "seconds": time.perf_counter() - t0}
    history = [row]
    args = dict(ckpt_args, hparams=hp, train_config={**cfg.to_dict(), "hparams": hp})
    for name in ("best.pt", "last.pt"):
        save_checkpoint(out_dir / name, model=model, history=history, epoch=1, **args)
    _write_history(out_dir, history)
    log(f"train acc {train_stats.accuracy:.3f}" + (f"  val acc {val.accuracy:.3f} macro-F1 {val.macro_f1:.3f}" if val else "")
        + f"  {row['seconds']:.1f}s")
    score = (val.macro_f1, val.accuracy) if val else (train_stats.accuracy, train_stats.accuracy)
    return FitResult(out_dir=out_dir, best_epoch=1, best_val_accuracy=score[1], best_val_macro_f1=score[0],
                     epochs_run=1, seconds=row["seconds"], history=history)


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    with open(out_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    from ser.report.plots import plot_history

    plot_history(history, out_dir / "curves.png")


# -- sweeps ------------------------------------------------------------------------------------
def parse_sweep(items: Sequence[str]) -> dict[str, list[str]]:
    """``["optimizer=adam,sgd", "filters=128,64|256,128"]`` -> grid axes. Values that contain
    commas themselves (filters, kernels) are separated by ``|``.

    Keys joined by ``+`` form one axis whose values change together (a list of rows, not a
    product): ``filters+kernels=128,64;1x3,3x5|512,256;3x5,3x5`` is two runs, each value giving
    the keys' parts separated by ``;``.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise SerError(f"--sweep {item!r} is not KEY=V1,V2")
        key, values = item.split("=", 1)
        key = "+".join(k.strip().replace("-", "_") for k in key.split("+"))
        sep = "|" if ("|" in values or "+" in key) else ","
        vals = [v.strip() for v in values.split(sep) if v.strip()]
        if not vals:
            raise SerError(f"--sweep {item!r} has no values")
        n_keys = len(key.split("+"))
        for v in vals:
            if n_keys > 1 and len(v.split(";")) != n_keys:
                raise SerError(f"--sweep {item!r}: value {v!r} needs {n_keys} parts separated by ';' "
                               f"(one per key of {key})")
        grid[key] = vals
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every point of the grid as plain ``{key: value}`` overrides (joined axes split apart)."""
    points = []
    for values in itertools.product(*grid.values()):
        point: dict[str, str] = {}
        for key, value in zip(grid, values):
            point.update(zip(key.split("+"), value.split(";")) if "+" in key else [(key, value)])
        points.append(point)
    return points


_TOP_LEVEL_CASTS: dict[str, Callable[[str], Any]] = {
    "optimizer": str, "lr": float, "epochs": int, "batch_size": int, "seed": int, "patience": int,
    "weight_decay": float, "momentum": float, "mixup": float,
    "spec_augment": lambda v: str(v).lower() in ("1", "true", "yes", "on"),
    "speaker_norm": lambda v: str(v).lower() in ("1", "true", "yes", "on"),
}


def apply_overrides(base: TrainConfig, overrides: dict[str, str]) -> TrainConfig:
    """A config with top-level fields or model hyper-parameters replaced by (string) values."""
    top = {k: _TOP_LEVEL_CASTS[k](v) for k, v in overrides.items() if k in _TOP_LEVEL_CASTS}
    hp = {k: v for k, v in overrides.items() if k not in _TOP_LEVEL_CASTS}
    if "model" in hp:
        raise SerError("the model cannot be swept; run one sweep per model")
    return dataclasses.replace(base, **top, hparams={**base.hparams, **hp})


def sweep(base: TrainConfig, grid: dict[str, list[str]], data: TrainData, out_dir: str | Path, *,
          device: torch.device, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
          resume: bool = False) -> list[dict[str, Any]]:
    """Train every grid point from one load of the store; write results.csv/.md and the winner's best.pt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from ser.evaluation.evaluator import evaluate

    results = []
    points = grid_points(grid)
    has_test = len(data.store.rows("test")) > 0
    for i, overrides in enumerate(points, 1):
        cfg = apply_overrides(base, overrides)
        name = "-".join(f"{k}={v}".replace("/", "_").replace("|", "_").replace(",", "_") for k, v in overrides.items())
        log(f"[{i}/{len(points)}] {name}")
        res = fit(cfg, data, out_dir / name, device=device, log=log, resume=resume)
        results.append({**overrides, "run": name, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                        "val_accuracy": round(res.best_val_accuracy, 4), "val_macro_f1": round(res.best_val_macro_f1, 4),
                        "seconds": round(res.seconds, 1)})
        if has_test:  # reported beside each run; the winner is still picked on validation alone
            ev = evaluate(res.out_dir / "best.pt", store=data.store.path, split="test",
                          out_dir=res.out_dir / "test", device=device.type, log=log)
            results[-1].update(test_accuracy=round(ev.metrics["accuracy"], 4),
                               test_macro_f1=round(ev.metrics["f1_macro"], 4))
            log(f"    test accuracy {ev.metrics['accuracy']:.4f}, macro-F1 {ev.metrics['f1_macro']:.4f}")
    results.sort(key=lambda r: (-r["val_macro_f1"], -r["val_accuracy"]))
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    cols = list(results[0])
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in results]
    (out_dir / "results.md").write_text("\n".join(md) + "\n")
    winner = results[0]
    shutil.copyfile(out_dir / winner["run"] / "best.pt", out_dir / "best.pt")
    log(f"best: {winner['run']} (val macro-F1 {winner['val_macro_f1']}, accuracy {winner['val_accuracy']})")
    return results


def train(store_path: str | Path, cfg: TrainConfig, out_dir: str | Path, *, device: str = "auto",
          sweep_grid: dict[str, list[str]] | None = None, memory_budget_bytes: int | None = None,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
          resume: bool = False) -> list[dict[str, Any]] | FitResult:
    """Open the store, load the model's feature family once, then fit one config or a grid.

    ``memory_budget_bytes`` caps what the input path keeps in memory (device memory on CUDA,
    RAM on CPU); None picks a default from what is free (see :mod:`ser.training.data`). A split that
    does not fit is streamed in chunks from the store.
    """
    dev = pick_device(device)
    if not launched_by_torchrun():
        return _train(store_path, cfg, out_dir, dev=dev, ctx=DistContext(), sweep_grid=sweep_grid,
                      memory_budget_bytes=memory_budget_bytes, log=log, resume=resume)
    # launched by torchrun (WORLD_SIZE > 1): data-parallel, one process per rank
    if sweep_grid:
        raise SerError("--sweep is not supported under torchrun; run the grid in one process")
    if resume:
        raise SerError("--resume is not supported under torchrun yet; resume in one process")
    if get_spec(cfg.model).trainer == "sklearn":
        raise SerError(f"{cfg.model} is a scikit-learn model: train it in one process, not under torchrun")
    ctx, dist_dev = init_distributed(device)
    try:
        if not ctx.is_main:
            log = lambda m: None  # noqa: E731
        return _train(store_path, cfg, out_dir, dev=dist_dev, ctx=ctx, sweep_grid=None,
                      memory_budget_bytes=memory_budget_bytes, log=log, resume=False)
    finally:
        cleanup(ctx)


def _train(store_path: str | Path, cfg: TrainConfig, out_dir: str | Path, *, dev: torch.device, ctx: DistContext,
           sweep_grid: dict[str, list[str]] | None, memory_budget_bytes: int | None,
           log: Callable[[str], None], resume: bool) -> list[dict[str, Any]] | FitResult:
    store = Store(store_path)
    t0 = time.perf_counter()
    data = load_train_data(store, get_spec(cfg.model).family, dev, memory_budget_bytes=memory_budget_bytes,
                           speaker_norm=cfg.speaker_norm, ctx=ctx)
    log(f"input: train {len(data.train)} rows {data.train.mode}"
        + (f" (rank 0's shard of {len(store.rows('train'))}, {ctx.world_size} ranks)" if ctx.enabled else "")
        + (f"; val {len(data.val)} rows {data.val.mode}" if data.val else "")
        + f" ({'given' if memory_budget_bytes is not None else 'default'} budget; loaded in "
        f"{time.perf_counter() - t0:.1f}s)")
    if sweep_grid:
        return sweep(cfg, sweep_grid, data, out_dir, device=dev, log=log, resume=resume)
    return fit(cfg, data, out_dir, device=dev, log=log, resume=resume, ctx=ctx)

