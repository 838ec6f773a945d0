"""Late fusion: several trained checkpoints whose class probabilities are averaged.

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
        """The weighted mean of the members' probabilities ``(rows, classes)``, in member order."""
        return sum(w * np.asarray(p, dtype=np.float64) for w, p in zip(self.weights, probabilities))


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(w) != n:
        raise CheckpointError(f"{len(w)} weight(s) for {n} checkpoints: give one weight per checkpoint")
    if any(v < 0 for v in w) or sum(w) <= 0:
        raise CheckpointError(f"fusion weights must be non-negative and not all zero, got {w}")
    return [v / sum(w) for v in w]


def _check_members(members: list[Checkpoint]) -> None:
    first = members[0]
    for m in members[1:]:
        if m.labels != first.labels:
            raise CheckpointError(f"{m.path} knows {', '.join(m.labels)}; {first.path} knows "
                                  f"{', '.join(first.labels)}: fused checkpoints must share their labels")
        if m.feature_config != first.feature_config:
            raise CheckpointError(f"{m.path} and {first.path} were trained on different feature configs: "
                                  "fuse checkpoints trained on the same store")


def save_fusion(path: str | Path, checkpoints: Sequence[str | Path], weights: Sequence[float] | None = None) -> Fusion:
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
    payload = {"checkpoint_version": CHECKPOINT_VERSION, "fusion": True, "members": raws, "weights": w,
               "sources": [str(Path(c).resolve()) for c in checkpoints]}
    payload["sha256"] = content_digest(payload)
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return Fusion(path, members, w)


def load_model(path: str | Path) -> Checkpoint | Fusion:
    """A checkpoint or a fusion, whichever ``path`` holds (both verified by their SHA-256)."""
    path = Path(path)
    raw = read_payload(path)
    if not raw.get("fusion"):
        return checkpoint_from_payload(raw, path)
    try:
        members = [checkpoint_from_payload(m, path) for m in raw["members"]]
        weights = [float(v) for v in raw["weights"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: fusion is damaged or incomplete ({type(exc).__name__}: {exc})") from None
    _check_members(members)
    return Fusion(path, members, weights)
