"""Late fusion: several trained checkpoints whose class probabilities are averaged.

Each member may have a temperature ``t``: its probabilities enter the mean as
``softmax(logits / t)`` (``p ** (1 / t)``, renormalised), so that a member whose scores are
overconfident, such as an RBF SVM's one-vs-one votes, does not drown the others. A temperature
never changes a member's own argmax.

A fusion file (``ser fuse A.pt B.pt --out fused.pt``) holds its members' whole checkpoints
(each with its own weights, family, scaler and per-speaker setting) and one weight per member,
in one payload checked by its SHA-256 like a checkpoint. The members must share the label list
and the feature config: they were trained on the same store (a descriptor model and a mel
model, typically), so ``evaluate`` and ``predict`` can feed each its own family of the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ser.errors import CheckpointError
from ser.training.checkpoint import (CHECKPOINT_VERSION, Checkpoint, checkpoint_from_payload, content_digest,
                                     read_payload)


@dataclass
class Fusion:
    """A loaded fusion: its members, in order, and their weights (summing to 1)."""

    path: Path
    members: list[Checkpoint]
    weights: list[float]
    temperatures: list[float] | None = None   # one per member; None: all 1

    @property
    def labels(self) -> list[str]:
        return self.members[0].labels

    @property
    def feature_config(self) -> dict[str, Any]:
        return self.members[0].feature_config

    @property
    def model_name(self) -> str:
        return "fusion(" + ", ".join(m.model_name for m in self.members) + ")"

    @property
    def store_path(self) -> str:
        return self.members[0].store_path

    def combine(self, probabilities: Sequence[np.ndarray]) -> np.ndarray:
        """The weighted mean of the members' probabilities ``(rows, classes)``, in member order,
        each tempered by its member's temperature."""
        temps = self.temperatures or [1.0] * len(self.members)
        return sum(w * tempered(p, t) for w, t, p in zip(self.weights, temps, probabilities))


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / temperature)`` row by row, in float64: the probabilities of logits
    divided by ``temperature`` (1 returns ``p`` itself)."""
    p = np.asarray(p, dtype=np.float64)
    if temperature == 1.0:
        return p
    z = np.log(np.maximum(p, 1e-300)) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise CheckpointError(f"{len(w)} weight(s) for {n} checkpoints: give one weight per checkpoint")
    if any(v < 0 for v in w) or sum(w) <= 0:
        raise CheckpointError(f"fusion weights must be non-negative and not all zero, got {w}")
    return [v / sum(w) for v in w]


def _temperatures(n: int, temperatures: Sequence[float] | None) -> list[float]:
    t = [1.0] * n if temperatures is None else [float(v) for v in temperatures]
    if len(t) != n:
        raise CheckpointError(f"{len(t)} temperature(s) for {n} checkpoints: give one per checkpoint")
    if any(not v > 0 for v in t):
        raise CheckpointError(f"fusion temperatures must be positive, got {t}")
    return t


def _check_members(members: list[Checkpoint]) -> None:
    first = members[0]
    for m in members[1:]:
        if m.labels != first.labels:
            raise CheckpointError(f"{m.path} knows {', '.join(m.labels)}; {first.path} knows "
                                  f"{', '.join(first.labels)}: fused checkpoints must share their labels")
        if m.feature_config != first.feature_config:
            raise CheckpointError(f"{m.path} and {first.path} were trained on different feature configs: "
                                  "fuse checkpoints trained on the same store")


def save_fusion(path: str | Path, checkpoints: Sequence[str | Path], weights: Sequence[float] | None = None,
                temperatures: Sequence[float] | None = None) -> Fusion:
    """Write a fusion of ``checkpoints`` (at least two, plain checkpoints) to ``path``, atomically."""
    if len(checkpoints) < 2:
        raise CheckpointError("a fusion needs at least two checkpoints")
    raws = [read_payload(Path(c)) for c in checkpoints]
    for c, raw in zip(checkpoints, raws):
        if raw.get("fusion"):
            raise CheckpointError(f"{c} is a fusion already: fuse its members instead")
    members = [checkpoint_from_payload(raw, Path(c)) for c, raw in zip(checkpoints, raws)]
    _check_members(members)
    w = _weights(len(members), weights)
    t = _temperatures(len(members), temperatures)
    payload = {"checkpoint_version": CHECKPOINT_VERSION, "fusion": True, "members": raws, "weights": w,
               "temperatures": t, "sources": [str(Path(c).resolve()) for c in checkpoints]}
    payload["sha256"] = content_digest(payload)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return Fusion(path, members, w, t)


def load_model(path: str | Path) -> Checkpoint | Fusion:
    """A checkpoint or a fusion, whichever ``path`` holds (both verified by their SHA-256)."""
    path = Path(path)
    raw = read_payload(path)
    if not raw.get("fusion"):
        return checkpoint_from_payload(raw, path)
    try:
        members = [checkpoint_from_payload(m, path) for m in raw["members"]]
        weights = [float(v) for v in raw["weights"]]
        temps = _temperatures(len(members), raw.get("temperatures"))  # fusions written before: all 1
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: fusion is damaged or incomplete ({type(exc).__name__}: {exc})") from None
    _check_members(members)
    return Fusion(path, members, weights, temps)
