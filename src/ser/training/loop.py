"""The one training loop, for every model, reading the store only (never audio).

``fit`` trains one configuration (sweeps over many live in :mod:`ser.experiments.sweep`).
Early stopping watches validation macro-F1; ``best.pt`` and ``last.pt`` carry everything
evaluate and predict need (see :mod:`ser.training.checkpoint`). Training writes numbers
only (``history.csv``); figures are drawn above it, by :mod:`ser.report`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ser.errors import SerError
from ser.store import Store
from ser.training.checkpoint import save_checkpoint
from ser.training.data import (SplitData, default_memory_budget, fit_statistics, load_rows, load_split, one_row_per_clip,
                               reduced_statistics, split_footprint)
from ser.training.ddp import (DistContext, all_reduce_sum, all_reduce_sum_on, broadcast_flag, cleanup,
                              init_distributed, launched_by_torchrun, local_world_size, shard_rows, unpadded_shard)
from ser.training.device import pick_device
from ser.training.models import SerNet, build_model, get_spec, resolve_hparams

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")
VARIANTS = ("all", "one", "original")
# what picks the best epoch (early stopping, best.pt) and a sweep's winner: the first, then the
# second breaks ties. UAR by default: what SER papers report first, and blind to class sizes.
SELECT_METRICS = {"uar": ("uar", "accuracy"), "macro-f1": ("macro_f1", "accuracy"),
                  "accuracy": ("accuracy", "uar")}


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; saved in the checkpoint."""

    model: str = "cnn1d"
    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 100
    batch_size: int = 64
    seed: int = 42
    patience: int = 20            # epochs without a better validation score before stopping; 0: never
    select: str = "uar"           # the validation score that picks the best epoch: SELECT_METRICS
    weight_decay: float = 0.0
    momentum: float = 0.9         # SGD only
    spec_augment: bool = False    # time/frequency masks on mel batches, at train time
    mixup: float = 0.0            # mixup Beta(alpha, alpha); 0 disables
    speaker_norm: bool = False    # standardise each speaker by their own clips' statistics (speakers.py)
    label_smoothing: float = 0.0  # the targets' weight spread evenly over the classes
    schedule: str = "constant"    # the learning rate over epochs: SCHEDULES
    variants: str = "all"         # each epoch trains on every row, one random row (variant) per clip, or originals
    hparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_spec(self.model)
        if self.optimizer not in OPTIMIZERS:
            raise SerError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name, value, known in (("schedule", self.schedule, SCHEDULES), ("variants", self.variants, VARIANTS)):
            if value not in known:
                raise SerError(f"{name} must be one of {', '.join(known)}, got {value!r}")
        if not 0 <= self.label_smoothing < 1:
            raise SerError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.select not in SELECT_METRICS:
            raise SerError(f"select must be one of {', '.join(SELECT_METRICS)}, got {self.select!r}")
        if self.lr <= 0 or self.epochs <= 0 or self.batch_size <= 0:
            raise SerError("lr, epochs and batch size must be positive")
        object.__setattr__(self, "hparams", resolve_hparams(self.model, self.hparams))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 1): ``lr`` throughout, or a cosine from ``lr`` towards 0
    over ``epochs`` (a function of the epoch alone, so a resumed run needs no scheduler state)."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))


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
    uar: float  # unweighted average recall (mean per-class recall)


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
    from sklearn.metrics import f1_score, recall_score

    logits, y = predict_logits(model, data, amp=amp)
    loss = float(nn.functional.cross_entropy(logits, y))
    pred = logits.argmax(1)
    true = y.numpy()
    return EpochStats(loss=loss, accuracy=float((pred == y).float().mean()),
                      macro_f1=float(f1_score(true, pred.numpy(), average="macro", zero_division=0)),
                      uar=float(recall_score(true, pred.numpy(), labels=np.unique(true), average="macro",
                                             zero_division=0)))


def selection_score(stats: EpochStats, select: str) -> tuple[float, float]:
    """``(score, tie-breaker)`` of one evaluation under ``select`` (a key of SELECT_METRICS)."""
    first, second = SELECT_METRICS[select]
    return getattr(stats, first), getattr(stats, second)


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
    best_val_uar: float
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]]


@dataclass
class _Run:
    """One torch run's fixed parts: what every step of :func:`fit` reads."""

    cfg: TrainConfig
    data: TrainData
    out_dir: Path
    device: torch.device
    ctx: DistContext
    model: SerNet
    net: nn.Module              # what the training steps call: the DDP wrapper when data-parallel
    opt: torch.optim.Optimizer
    gen: torch.Generator        # shuffling, SpecAugment masks and mixup pairs: this rank's stream
    clips: np.ndarray | None    # each training row's clip, when an epoch takes one variant per clip
    originals: np.ndarray | None  # the training rows that are originals, when an epoch takes only them
    ckpt_args: dict[str, Any]   # what every checkpoint of the run records besides weights and history
    log: Callable[[str], None]

    @property
    def amp(self) -> bool:
        return self.device.type == "cuda"  # bfloat16 autocast on the GPU only


@dataclass
class _Progress:
    """What changes epoch by epoch; ``last.pt`` carries it so a run can resume."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: tuple[float, float, int] = (-1.0, -1.0, 0)  # (selection_score's two, epoch)
    stale: int = 0  # epochs since ``best`` improved
    first: int = 1  # the first epoch still to run
    saved: int = 0  # the epoch last.pt holds (0: none)


def fit(cfg: TrainConfig, data: TrainData, out_dir: str | Path, *, device: torch.device,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr), resume: bool = False,
        ctx: DistContext | None = None) -> FitResult:
    """Train one configuration; writes best.pt, last.pt and history.csv to ``out_dir``.

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
    ctx = ctx or DistContext()
    if ctx.enabled and resume:
        raise SerError("--resume is not supported under torchrun yet; resume in one process")
    if not ctx.is_main:
        log = lambda m: None  # noqa: E731
    out_dir = _run_folder(out_dir, ctx)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    gen = torch.Generator().manual_seed(cfg.seed + ctx.rank)  # each rank's own within-shard order
    spec = get_spec(cfg.model)
    if spec.family != data.family:
        raise SerError(f"model {cfg.model} reads {spec.family}, the data loaded is {data.family}")
    ckpt_args = dict(model_name=cfg.model, hparams=cfg.hparams, family=data.family, labels=data.store.labels,
                     feature_config=data.store.feature_config, input_shape=data.input_shape,
                     train_config=cfg.to_dict(), store=data.store)
    if spec.trainer == "sklearn":  # one deterministic fit: resuming it is fitting it again
        if ctx.enabled:
            raise SerError(f"{cfg.model} is a scikit-learn model: train it in one process, not under torchrun")
        return _fit_classic(cfg, data, out_dir, device=device, ckpt_args=ckpt_args, log=log)
    run = _build_run(cfg, data, out_dir, device=device, ctx=ctx, gen=gen, ckpt_args=ckpt_args, log=log)
    progress = _restore(run) if resume else _Progress()
    _log_start(run)
    return _train_epochs(run, progress)


def _run_folder(out_dir: str | Path, ctx: DistContext) -> Path:
    """``out_dir`` as a Path, created by rank 0; refused when it is a file."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SerError(f"--out {out_dir} exists and is not a folder")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _build_run(cfg: TrainConfig, data: TrainData, out_dir: Path, *, device: torch.device, ctx: DistContext,
               gen: torch.Generator, ckpt_args: dict[str, Any], log: Callable[[str], None]) -> _Run:
    """The model (wrapped in DDP when data-parallel) and its optimizer, on ``device``."""
    model = build_model(cfg.model, input_shape=data.input_shape, n_classes=len(data.store.labels),
                        hparams=cfg.hparams, mean=data.mean, std=data.std).to(device)
    net: nn.Module = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    clips = _train_clips(data) if cfg.variants == "one" else None
    originals = _original_rows(data) if cfg.variants == "original" else None
    return _Run(cfg=cfg, data=data, out_dir=out_dir, device=device, ctx=ctx, model=model, net=net,
                opt=make_optimizer(cfg, net.parameters()), gen=gen, clips=clips, originals=originals,
                ckpt_args=ckpt_args, log=log)


def _train_clips(data: TrainData) -> np.ndarray:
    """Each training row's clip id, in row order."""
    return data.store.meta()["clip_id"].astype(str).to_numpy()[data.train.rows]


def _original_rows(data: TrainData) -> np.ndarray:
    """Whether each training row is an original (not an augmented copy), in row order."""
    return data.store.meta()["augment"].to_numpy()[data.train.rows] == "none"


def _restore(run: _Run) -> _Progress:
    """Weights, optimizer, early-stopping and RNG states from ``last.pt``; a fresh start without one."""
    from ser.training.checkpoint import load_resume_state

    last = run.out_dir / "last.pt"
    state = load_resume_state(last, run.cfg.to_dict(), run.data.store)
    if state is None:
        run.log(f"no {last} to resume from; starting at epoch 1")
        return _Progress()
    run.model.load_state_dict(state["state_dict"])
    run.opt.load_state_dict(state["optimizer"])
    run.gen.set_state(state["rng_shuffle"])
    torch.set_rng_state(state["rng_torch"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    progress = _Progress(history=state["history"], best=state["best"], stale=state["stale"],
                         first=state["epoch"] + 1, saved=state["epoch"])
    run.log(f"resuming {run.out_dir} after epoch {state['epoch']} (best so far: epoch {progress.best[2]})")
    return progress


def _log_start(run: _Run) -> None:
    cfg, data, ctx = run.cfg, run.data, run.ctx
    run.log(f"training {cfg.model} ({sum(p.numel() for p in run.model.parameters()):,} parameters) on "
            f"{run.device}" + (f" x {ctx.world_size} processes (DDP): {len(data.train)} train rows per rank"
                               if ctx.enabled else f": {len(data.train)} train rows")
            + f" [{data.train.mode}], {len(data.val) if data.val else 0} val rows; "
            f"{cfg.optimizer} lr={cfg.lr} batch={cfg.batch_size}")


def _train_epochs(run: _Run, progress: _Progress) -> FitResult:
    """Epochs from ``progress.first`` until the last one or an early stop, deterministic on the CPU."""
    cfg, t_start = run.cfg, time.perf_counter()
    finished = bool(progress.history) and bool((cfg.patience and progress.stale >= cfg.patience)
                                               or progress.first > cfg.epochs)
    if finished:
        run.log(f"{run.out_dir} already finished at epoch {progress.first - 1}; nothing to resume")
    deterministic = torch.are_deterministic_algorithms_enabled()
    if run.device.type == "cpu":  # bit-identical reruns and resumes on the CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
    epochs = range(0) if finished else range(progress.first, cfg.epochs + 1)
    try:
        for epoch in epochs:
            if _epoch(run, progress, epoch):
                break
    except KeyboardInterrupt:
        if run.ctx.is_main:
            run.log(f"\ninterrupted: {run.out_dir / 'last.pt'} holds epoch {progress.saved}; run the same "
                    "command with --resume to continue from there" if progress.saved
                    else "\ninterrupted before the first epoch ended")
        raise
    finally:
        if run.device.type == "cpu":
            torch.use_deterministic_algorithms(deterministic)
    if not run.ctx.is_main:
        return _fit_result(run.out_dir, 0, [], time.perf_counter() - t_start)
    write_history(run.out_dir, progress.history)
    return _fit_result(run.out_dir, int(progress.best[2]), progress.history, time.perf_counter() - t_start)


def _fit_result(out_dir: Path, best_epoch: int, history: list[dict[str, Any]], seconds: float) -> FitResult:
    """The best epoch's validation scores (its training accuracy without validation rows)."""
    row = next((r for r in history if r["epoch"] == best_epoch), None)
    if row is None:
        nan = float("nan")
        return FitResult(out_dir, best_epoch, nan, nan, nan, len(history), seconds, history)
    val = not np.isnan(row["val_accuracy"])
    pick = (lambda k: row[f"val_{k}"]) if val else (lambda k: row["train_accuracy"])
    return FitResult(out_dir=out_dir, best_epoch=best_epoch, best_val_accuracy=float(pick("accuracy")),
                     best_val_macro_f1=float(pick("macro_f1")), best_val_uar=float(pick("uar")),
                     epochs_run=len(history), seconds=seconds, history=history)


def _epoch(run: _Run, progress: _Progress, epoch: int) -> bool:
    """Train one epoch, then (rank 0) validate, checkpoint and log; True when training should stop."""
    t0 = time.perf_counter()
    train_loss, train_acc = _train_one_epoch(run, epoch)
    if not run.ctx.is_main:  # rank 0 validates, saves and decides; the others wait for its word
        return broadcast_flag(False, run.ctx, run.device)
    val = evaluate_split(run.model, run.data.val, amp=run.amp) if run.data.val else None
    row = _history_row(epoch, train_loss, train_acc, val, seconds=time.perf_counter() - t0)
    progress.history.append(row)
    improved = _checkpoint(run, progress, epoch,
                           selection_score(val, run.cfg.select) if val else (train_acc, train_acc))
    run.log(f"epoch {epoch:3d}/{run.cfg.epochs}  loss {train_loss:.4f}  acc {train_acc:.3f}"
            + (f"  val loss {val.loss:.4f} acc {val.accuracy:.3f} UAR {val.uar:.3f} macro-F1 {val.macro_f1:.3f}"
               if val else "")
            + f"  {row['seconds']:.1f}s" + ("  *" if improved else ""))
    return _early_stop(run, progress)


def _train_one_epoch(run: _Run, epoch: int) -> tuple[float, float]:
    """One pass over the (shuffled) training rows: ``(mean loss, accuracy)`` over every rank's rows."""
    run.net.train()
    for group in run.opt.param_groups:
        group["lr"] = epoch_lr(run.cfg, epoch)
    keep = _epoch_rows(run)
    total_loss = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device)
    seen = 0
    for x, y in run.data.train.batches(run.cfg.batch_size, shuffle=True, generator=run.gen, keep=keep):
        if x.shape[0] < 2:  # BatchNorm cannot train on one row
            continue
        x, targets = _augment_batch(run, x, y, epoch=epoch, seen=seen)
        with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=run.amp):
            logits = run.net(x, normalized=True)
            loss = nn.functional.cross_entropy(logits.float(), targets)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        total_loss += loss.detach() * x.shape[0]
        correct += (logits.argmax(1) == y).sum()
        seen += x.shape[0]
    if run.ctx.enabled:  # over every rank's rows (the padded shards), so all ranks agree
        sums = all_reduce_sum(torch.stack([total_loss.float(), correct.float(),
                                           torch.tensor(float(seen), device=run.device)]), run.ctx)
        total_loss, correct, seen = sums[0], sums[1], int(round(float(sums[2])))
    train_loss = float(total_loss) / max(seen, 1)
    if not np.isfinite(train_loss):
        raise SerError(f"training diverged at epoch {epoch} (loss {train_loss}); try a smaller --lr")
    return train_loss, float(correct) / max(seen, 1)


def _epoch_rows(run: _Run) -> np.ndarray | None:
    """Which training rows this epoch takes: all (None), one random variant a clip, or the originals."""
    if run.originals is not None:
        return run.originals
    return one_row_per_clip(run.clips, run.gen) if run.clips is not None else None


def _augment_batch(run: _Run, x: torch.Tensor, y: torch.Tensor, *, epoch: int,
                   seen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised inputs and soft targets ``(B, classes)``, after SpecAugment and mixup when asked.

    Mixup's weight comes from its own generator, seeded by (seed, epoch, rows seen), so it does
    not shift the shuffling stream; its pairing permutation comes from ``run.gen``.
    """
    cfg = run.cfg
    x = run.model.normalize(x)
    if cfg.spec_augment and run.data.family == "mel":
        x = spec_augment(x, run.gen)
    n_classes = len(run.data.store.labels)
    targets = nn.functional.one_hot(y, n_classes).float()
    if cfg.label_smoothing > 0:
        targets = targets * (1 - cfg.label_smoothing) + cfg.label_smoothing / n_classes
    if cfg.mixup > 0:
        lam = float(np.random.default_rng(cfg.seed * 100003 + epoch * 7919 + seen).beta(cfg.mixup, cfg.mixup))
        perm = torch.randperm(x.shape[0], generator=run.gen).to(run.device)
        x = lam * x + (1 - lam) * x[perm]
        targets = lam * targets + (1 - lam) * targets[perm]
    return x, targets


def _history_row(epoch: int, train_loss: float, train_acc: float, val: EpochStats | None, *,
                 seconds: float) -> dict[str, Any]:
    """One line of history.csv (validation columns NaN without validation rows)."""
    nan = float("nan")
    return {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val.loss if val else nan, "val_accuracy": val.accuracy if val else nan,
            "val_macro_f1": val.macro_f1 if val else nan, "val_uar": val.uar if val else nan, "seconds": seconds}


def _checkpoint(run: _Run, progress: _Progress, epoch: int, score: tuple[float, float]) -> bool:
    """Update the best score; write best.pt when it improved, then last.pt. True: it improved."""
    improved = score > tuple(progress.best[:2])
    if improved:
        progress.best, progress.stale = (score[0], score[1], epoch), 0
        save_checkpoint(run.out_dir / "best.pt", model=run.model, history=progress.history, epoch=epoch,
                        **run.ckpt_args)
    else:
        progress.stale += 1
    # last.pt after best.pt: a run killed between the two redoes this epoch, identically
    save_checkpoint(run.out_dir / "last.pt", model=run.model, history=progress.history, epoch=epoch,
                    extra=_resume_state(run, progress, epoch), **run.ckpt_args)
    progress.saved = epoch
    return improved


def _resume_state(run: _Run, progress: _Progress, epoch: int) -> dict[str, Any]:
    """Plain data and tensors only: last.pt still loads with weights_only=True."""
    best = progress.best
    return {"resume": {
        "epoch": epoch, "optimizer": run.opt.state_dict(), "best": [float(best[0]), float(best[1]), int(best[2])],
        "stale": progress.stale, "rng_shuffle": run.gen.get_state(), "rng_torch": torch.get_rng_state(),
        "rng_cuda": list(torch.cuda.get_rng_state_all()) if run.device.type == "cuda" else [],
    }}


def _early_stop(run: _Run, progress: _Progress) -> bool:
    """Rank 0's decision after ``patience`` epochs without improvement, broadcast to every rank."""
    patience = run.cfg.patience
    stop = bool(patience and progress.stale >= patience)
    if run.ctx.enabled:
        stop = broadcast_flag(stop, run.ctx, run.device)
    if stop:
        run.log(f"early stop: no better validation {run.cfg.select} for {patience} epochs")
    return stop


def _fit_classic(cfg: TrainConfig, data: TrainData, out_dir: Path, *, device: torch.device,
                 ckpt_args: dict[str, Any], log: Callable[[str], None]) -> FitResult:
    """Fit a scikit-learn baseline once on the standardised training rows; one history row."""
    from ser.training.baselines import fit_classic

    t0 = time.perf_counter()
    x = data.train.x if data.train.x is not None else torch.cat(
        [xb for xb, _ in data.train.batches(8192, shuffle=False)])  # row order, like the labels
    x, y = x.cpu().numpy(), data.train.labels.cpu().numpy()
    mean, std = data.mean, data.std
    if cfg.variants != "all":  # one fit on the rows kept, standardised by their own statistics
        keep = _original_rows(data) if cfg.variants == "original" else one_row_per_clip(
            _train_clips(data), torch.Generator().manual_seed(cfg.seed))
        x, y = x[keep], y[keep]
        mean, std = reduced_statistics(data.train, data.family, keep=keep)
    x = ((x - mean.numpy()) / std.numpy()).astype(np.float32)
    log(f"fitting {cfg.model} ({', '.join(f'{k}={v}' for k, v in cfg.hparams.items())}) on {len(y)} train rows")
    try:
        body, hp = fit_classic(cfg.model, x, y, len(data.store.labels), cfg.hparams, cfg.seed)
    except ValueError as exc:
        raise SerError(f"{cfg.model}: {exc}") from None
    model = SerNet(body, mean, std).to(device).eval()
    train_stats = evaluate_split(model, data.train)
    val = evaluate_split(model, data.val) if data.val else None
    row = _history_row(1, train_stats.loss, train_stats.accuracy, val, seconds=time.perf_counter() - t0)
    history = [row]
    args = dict(ckpt_args, hparams=hp, train_config={**cfg.to_dict(), "hparams": hp})
    for name in ("best.pt", "last.pt"):
        save_checkpoint(out_dir / name, model=model, history=history, epoch=1, **args)
    write_history(out_dir, history)
    log(f"train acc {train_stats.accuracy:.3f}" + (f"  val acc {val.accuracy:.3f} UAR {val.uar:.3f} "
                                                   f"macro-F1 {val.macro_f1:.3f}" if val else "")
        + f"  {row['seconds']:.1f}s")
    return _fit_result(out_dir, 1, history, row["seconds"])


def write_history(out_dir: Path, history: list[dict[str, Any]]) -> Path:
    """``out_dir/history.csv``: one row per epoch (the columns of :func:`_history_row`)."""
    path = Path(out_dir) / "history.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    return path


def train(store_path: str | Path, cfg: TrainConfig, out_dir: str | Path, *, device: str = "auto",
          memory_budget_bytes: int | None = None,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
          resume: bool = False) -> FitResult:
    """Open the store, load the model's feature family once, then fit the config.

    ``memory_budget_bytes`` caps what the input path keeps in memory (device memory on CUDA,
    RAM on CPU); None picks a default from what is free (see :mod:`ser.training.data`). A split that
    does not fit is streamed in chunks from the store. Launched by torchrun (``WORLD_SIZE`` > 1)
    it trains data-parallel, one process per rank.
    """
    dev = pick_device(device)
    if not launched_by_torchrun():
        data = open_train_data(store_path, cfg, dev, ctx=DistContext(), memory_budget_bytes=memory_budget_bytes,
                               log=log)
        return fit(cfg, data, out_dir, device=dev, log=log, resume=resume)
    if resume:
        raise SerError("--resume is not supported under torchrun yet; resume in one process")
    if get_spec(cfg.model).trainer == "sklearn":
        raise SerError(f"{cfg.model} is a scikit-learn model: train it in one process, not under torchrun")
    ctx, dist_dev = init_distributed(device)
    try:
        if not ctx.is_main:
            log = lambda m: None  # noqa: E731
        data = open_train_data(store_path, cfg, dist_dev, ctx=ctx, memory_budget_bytes=memory_budget_bytes,
                               log=log)
        return fit(cfg, data, out_dir, device=dist_dev, log=log, ctx=ctx)
    finally:
        cleanup(ctx)


def open_train_data(store_path: str | Path, cfg: TrainConfig, device: torch.device, *,
                    ctx: DistContext | None = None, memory_budget_bytes: int | None = None,
                    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> TrainData:
    """Open the store and load what ``cfg``'s model reads (:func:`load_train_data`), saying how."""
    ctx = ctx or DistContext()
    store = Store(store_path)
    t0 = time.perf_counter()
    data = load_train_data(store, get_spec(cfg.model).family, device, memory_budget_bytes=memory_budget_bytes,
                           speaker_norm=cfg.speaker_norm, ctx=ctx)
    log(f"input: train {len(data.train)} rows {data.train.mode}"
        + (f" (rank 0's shard of {len(store.rows('train'))}, {ctx.world_size} ranks)" if ctx.enabled else "")
        + (f"; val {len(data.val)} rows {data.val.mode}" if data.val else "")
        + f" ({'given' if memory_budget_bytes is not None else 'default'} budget; loaded in "
        f"{time.perf_counter() - t0:.1f}s)")
    return data
