"""Models by name: the study's 1D CNN over descriptors, a configurable 2D CNN over mel-dB, and
a time-delay CNN over mel-dB (x-vector style: the bands as channels, convolved along time).

Every network is wrapped in :class:`SerNet`, which carries the training set's input
statistics as buffers: a checkpoint's weights standardise their own input (open-unmix's habit),
so predict and evaluate cannot forget or mismatch the normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ser.errors import SerError


class SerNet(nn.Module):
    """``body((x - mean) / std)``: input statistics fitted on train rows, shipped with the weights.

    ``mean``/``std`` broadcast against one input row: ``(D,)`` for descriptors,
    ``(n_mels, 1)`` for mel-dB (per-band statistics).
    """

    def __init__(self, body: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("input_mean", mean.detach().clone().float())
        self.register_buffer("input_std", std.detach().clone().float())

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
        return self.body(x if normalized else self.normalize(x))


class CNN1D(nn.Module):
    """The study's 1D CNN over a descriptor vector read as a 1-channel sequence.

    Input ``(batch, D)``; output logits ``(batch, n_classes)``. Five Conv1d blocks
    (512-512-256-256-128, each Conv → ReLU → BatchNorm → MaxPool), Linear to 512 → ReLU →
    BatchNorm, Linear to the classes. The flattened size follows from ``D`` (128 × 7 for D=195).
    ``width`` scales every layer's channels (1: the study's 2.7 M-parameter network; 1/8: a
    network a CPU trains in seconds an epoch).
    """

    def __init__(self, input_length: int, n_classes: int, *, dropout: float = 0.0, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise SerError(f"width must be positive, got {width}")
        c1, c2, c3, c4, c5, hidden = (max(4, round(c * width)) for c in (512, 512, 256, 256, 128, 512))

        def block(c_in: int, c_out: int, k: int, pool_k: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, k, stride=1, padding=k // 2), nn.ReLU(),
                                       nn.BatchNorm1d(c_out), nn.MaxPool1d(pool_k, stride=2, padding=pool_k // 2)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            return layers

        self.features = nn.Sequential(
            *block(1, c1, 5, 5), *block(c1, c2, 5, 5), *block(c2, c3, 5, 5),
            *block(c3, c4, 3, 5), *block(c4, c5, 3, 3), nn.Flatten())
        self.features.eval()  # the probe batch has one row: BatchNorm must not use batch statistics
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, input_length)).shape[1]
        self.features.train()
        self.flat_size = flat
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.BatchNorm1d(hidden),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


def parse_kernels(text: str | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """``"1x3,3x5"`` -> ``[(1, 3), (3, 5)]`` (height along mel bands × width along time)."""
    if not isinstance(text, str):
        return [(int(k[0]), int(k[1])) for k in text]
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SerError(f"kernel {item!r} is not HxW with positive integers (e.g. 3x5)")
        out.append((int(parts[0]), int(parts[1])))
    return out


def parse_filters(text: str | Sequence[int]) -> list[int]:
    """``"128,128,64"`` -> ``[128, 128, 64]``."""
    if not isinstance(text, str):
        return [int(f) for f in text]
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SerError(f"filters {text!r} must be comma-separated integers") from None
    if not out or any(f <= 0 for f in out):
        raise SerError(f"filters {text!r} must be positive integers")
    return out


#: How CNN2D reduces its last feature map: global average or max pooling, statistics pooling
#: (each channel and band's mean and std over time, as x-vectors pool), or the study's flatten.
POOLINGS: tuple[str, ...] = ("avg", "max", "stats", "flatten")


class StatsPool(nn.Module):
    """``(B, C, H, W)`` → ``(B, 2·C·H)``: each channel and band's mean and std over time ``W``
    (the frequency axis kept, as the statistics pooling of x-vector CNNs does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, 2)
        return torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)


class TimePool(nn.Module):
    """``(B, bands, frames)`` → ``(B, bands, frames // k)``: every ``k`` frames averaged together
    (``k`` = 1: the input as it is), a cheaper, coarser input for the mel models."""

    def __init__(self, k: int, frames: int) -> None:
        super().__init__()
        if not 1 <= k <= frames:
            raise SerError(f"time_pool must be between 1 and the {frames} frames, got {k}")
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.k == 1 else nn.functional.avg_pool1d(x, self.k)


class CNN2D(nn.Module):
    """A 2D CNN over mel-dB, input ``(batch, n_mels, frames)``, logits ``(batch, n_classes)``.

    One block per entry of ``filters``/``kernels``: Conv2d (same padding) → BatchNorm (optional)
    → ReLU → MaxPool 2×2 (skipped along an axis already down to 1) → Dropout2d. Then global
    average, max or statistics pooling (or flattening, the study's way) → Dropout → Linear.
    ``time_pool`` > 1 first averages that many frames together (a cheaper, coarser input).
    """

    def __init__(self, input_shape: tuple[int, int], n_classes: int, *,
                 filters: Sequence[int] = (32, 64, 128, 128),
                 kernels: Sequence[tuple[int, int]] = ((3, 3), (3, 3), (3, 3), (3, 3)),
                 batch_norm: bool = True, dropout: float = 0.3, pooling: str = "avg", time_pool: int = 1) -> None:
        super().__init__()
        filters, kernels = list(filters), list(kernels)
        if len(filters) != len(kernels):
            raise SerError(f"{len(filters)} filters but {len(kernels)} kernels: give one kernel per filter")
        if pooling not in POOLINGS:
            raise SerError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.time_pool = TimePool(time_pool, input_shape[1])
        h, w = input_shape[0], input_shape[1] // self.time_pool.k
        layers: list[nn.Module] = []
        c_in = 1
        for f, (kh, kw) in zip(filters, kernels):
            layers.append(nn.Conv2d(c_in, f, (kh, kw), padding=(kh // 2, kw // 2), bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(f))
            layers.append(nn.ReLU())
            ph, pw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
            layers.append(nn.MaxPool2d((ph, pw)))
            h, w = h // ph, w // pw
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout / 2))
            c_in = f
        self.features = nn.Sequential(*layers)
        if pooling == "flatten":
            self.pool: nn.Module = nn.Flatten()
            width = c_in * h * w
        elif pooling == "stats":
            self.pool, width = StatsPool(), 2 * c_in * h
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1) if pooling == "avg" else nn.AdaptiveMaxPool2d(1),
                                      nn.Flatten())
            width = c_in
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.time_pool(x).unsqueeze(1))))


class AttentiveStatsPool(nn.Module):
    """``(B, C, T)`` → ``(B, 2·C)``: each channel's mean and std over time, weighted by a learned
    attention over the frames (softmax over ``T``), so that frames that carry no speech, such as
    a short clip's padding, can be given no weight (attentive statistics pooling, Okabe et al. 2018)."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.attention(h), dim=2)
        mean = (w * h).sum(dim=2)
        std = ((w * h * h).sum(dim=2) - mean * mean).clamp_min(1e-5).sqrt()
        return torch.cat([mean, std], dim=1)


class TDNN(nn.Module):
    """A time-delay CNN over mel-dB, input ``(batch, n_mels, frames)``, logits ``(batch, n_classes)``.

    The mel bands are the channels of 1D convolutions along time, as x-vector networks read
    filterbanks: Conv1d k=5 → k=3 dilation 2 → k=3 dilation 3 (``channels`` each) → k=1 to
    ``2·channels``, each with BatchNorm and ReLU; attentive statistics pooling over time; a
    ``channels``-wide hidden layer (BatchNorm, ReLU, Dropout); Linear to the classes.
    ``time_pool`` > 1 first averages that many frames together.
    """

    def __init__(self, input_shape: tuple[int, int], n_classes: int, *, channels: int = 128,
                 time_pool: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        if channels < 1:
            raise SerError(f"channels must be at least 1, got {channels}")
        self.time_pool = TimePool(time_pool, input_shape[1])
        c = int(channels)

        def block(c_in: int, c_out: int, k: int, dilation: int) -> list[nn.Module]:
            return [nn.Conv1d(c_in, c_out, k, dilation=dilation, padding=dilation * (k // 2), bias=False),
                    nn.BatchNorm1d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(int(input_shape[0]), c, 5, 1), *block(c, c, 3, 2),
                                      *block(c, c, 3, 3), *block(c, 2 * c, 1, 1))
        self.pool = AttentiveStatsPool(2 * c)
        self.head = nn.Sequential(nn.Linear(4 * c, c), nn.BatchNorm1d(c), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(self.time_pool(x))))


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model by name, and which feature family it reads."""

    name: str
    family: str                                   # "descriptors" or "mel"
    build: Callable[..., nn.Module]               # (input_shape, n_classes, **hparams)
    defaults: dict[str, Any]
    parse: dict[str, Callable[[Any], Any]]        # hyper-parameter parsers for CLI strings
    trainer: str = "torch"                        # "torch": the training loop; "sklearn": fitted once


def _build_cnn1d(input_shape: tuple[int, ...], n_classes: int, **hp: Any) -> nn.Module:
    return CNN1D(int(input_shape[0]), n_classes, **hp)


def _build_cnn2d(input_shape: tuple[int, ...], n_classes: int, **hp: Any) -> nn.Module:
    return CNN2D((int(input_shape[0]), int(input_shape[1])), n_classes, **hp)


def _build_tdnn(input_shape: tuple[int, ...], n_classes: int, **hp: Any) -> nn.Module:
    return TDNN((int(input_shape[0]), int(input_shape[1])), n_classes, **hp)


def _build_svm(input_shape: tuple[int, ...], n_classes: int, **hp: Any) -> nn.Module:
    from ser.training.baselines import RBFSVMScores

    return RBFSVMScores.from_hparams(int(input_shape[0]), n_classes, hp)


def _build_logreg(input_shape: tuple[int, ...], n_classes: int, **hp: Any) -> nn.Module:
    from ser.training.baselines import LinearScores

    return LinearScores(int(input_shape[0]), n_classes)


def _gamma(v: Any) -> Any:
    return "scale" if str(v) == "scale" else float(v)


def _svm_scores(v: Any) -> str:
    from ser.training.baselines import svm_scores

    try:
        return svm_scores(v)
    except ValueError as exc:
        raise SerError(str(exc)) from None


def _temperature(v: Any) -> float:
    from ser.training.baselines import svm_temperature

    try:
        return svm_temperature(v)
    except ValueError as exc:
        raise SerError(str(exc)) from None


def _flag(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes", "on")


MODELS: dict[str, ModelSpec] = {
    "cnn1d": ModelSpec("cnn1d", "descriptors", _build_cnn1d, {"dropout": 0.0, "width": 1.0},
                       {"dropout": float, "width": float}),
    "cnn2d": ModelSpec(
        "cnn2d", "mel", _build_cnn2d,
        {"filters": [32, 64, 128, 128], "kernels": [[3, 3], [3, 3], [3, 3], [3, 3]],
         "batch_norm": True, "dropout": 0.3, "pooling": "avg", "time_pool": 1},
        {"filters": parse_filters, "kernels": lambda v: [list(k) for k in parse_kernels(v)],
         "batch_norm": _flag, "dropout": float, "pooling": str, "time_pool": int}),
    "tdnn": ModelSpec("tdnn", "mel", _build_tdnn, {"channels": 128, "time_pool": 2, "dropout": 0.3},
                      {"channels": int, "time_pool": int, "dropout": float}),
    # classic baselines on the standardised descriptors, fitted by scikit-learn (see classic.py)
    "svm": ModelSpec("svm", "descriptors", _build_svm,
                     {"C": 10.0, "gamma": "scale", "balanced": False, "scores": "votes", "temperature": 1.0},
                     {"C": float, "gamma": _gamma, "balanced": _flag, "scores": _svm_scores,
                      "temperature": _temperature, "n_sv": int, "gamma_value": float},
                     trainer="sklearn"),
    "logreg": ModelSpec("logreg", "descriptors", _build_logreg, {"C": 1.0, "balanced": False},
                        {"C": float, "balanced": _flag}, trainer="sklearn"),
}


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise SerError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def resolve_hparams(name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's defaults updated with ``given`` (strings parsed), as plain JSON-able data."""
    spec = get_spec(name)
    hp = dict(spec.defaults)
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key not in spec.parse:
            raise SerError(f"model {name} has no hyper-parameter {key!r}; it has: {', '.join(spec.parse)}")
        hp[key] = spec.parse[key](value)
    return hp


def build_model(name: str, *, input_shape: tuple[int, ...], n_classes: int, hparams: dict[str, Any],
                mean: torch.Tensor, std: torch.Tensor) -> SerNet:
    """A :class:`SerNet` for ``name`` with input statistics ``mean``/``std``."""
    spec = get_spec(name)
    hp = dict(hparams)
    if "kernels" in hp:
        hp["kernels"] = [tuple(k) for k in hp["kernels"]]
    return SerNet(spec.build(input_shape, n_classes, **hp), mean, std)
