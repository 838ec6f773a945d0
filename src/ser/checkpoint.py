"""Checkpoints: everything evaluate and predict need, loadable without running code.

A checkpoint is a dict of tensors and plain data (str, int, float, lists, dicts), saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``, so a malicious file cannot
execute code. Configs travel as JSON strings.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .models import SerNet, build_model
from .store import Store, describe_differences

CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``model`` is built and in eval mode on the CPU."""

    path: Path
    model_name: str
    hparams: dict[str, Any]
    family: str
    labels: list[str]
    feature_config: dict[str, Any]
    input_shape: tuple[int, ...]
    train_config: dict[str, Any]
    store_path: str
    store_fingerprint: str
    history: list[dict[str, Any]]
    epoch: int
    model: SerNet
    raw: dict[str, Any]


def save_checkpoint(path: str | Path, *, model: SerNet, model_name: str, hparams: dict[str, Any],
                    family: str, labels: list[str], feature_config: dict[str, Any],
                    input_shape: tuple[int, ...], train_config: dict[str, Any], store: Store,
                    history: list[dict[str, Any]], epoch: int,
                    extra: dict[str, Any] | None = None) -> None:
    """Write a checkpoint atomically (temp file, then rename): a crash never leaves half a file."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "model_name": model_name,
        "hparams": json.dumps(hparams),
        "family": family,
        "labels": list(labels),
        "feature_config": json.dumps(feature_config, sort_keys=True),
        "input_shape": list(input_shape),
        "train_config": json.dumps(train_config, sort_keys=True),
        "store_path": str(Path(store.path).resolve()),
        "store_fingerprint": store.fingerprint(),
        "history": json.dumps(history),
        "epoch": int(epoch),
        "state_dict": state,
        # the scaler, as numbers: StandardScaler's mean_ and scale_ (or per-band mel statistics)
        "scaler": {"mean": state["input_mean"], "scale": state["input_std"]},
    }
    if extra:
        payload.update(extra)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load safely (``weights_only=True``) and rebuild the model; clear errors for bad files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than tensors and "
                              f"plain data, which could run code ({str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(raw, dict) or raw.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a ser checkpoint (version {raw.get('checkpoint_version') if isinstance(raw, dict) else None})")
    try:
        hparams = json.loads(raw["hparams"])
        input_shape = tuple(int(v) for v in raw["input_shape"])
        labels = list(raw["labels"])
        state = raw["state_dict"]
        model = build_model(raw["model_name"], input_shape=input_shape, n_classes=len(labels),
                            hparams=hparams, mean=state["input_mean"], std=state["input_std"])
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint is incomplete or does not fit its model ({exc})") from None
    model.eval()
    return Checkpoint(path=path, model_name=raw["model_name"], hparams=hparams, family=raw["family"],
                      labels=labels, feature_config=json.loads(raw["feature_config"]),
                      input_shape=input_shape, train_config=json.loads(raw["train_config"]),
                      store_path=raw["store_path"], store_fingerprint=raw["store_fingerprint"],
                      history=json.loads(raw["history"]), epoch=int(raw["epoch"]), model=model, raw=raw)


def check_compatible(ckpt: Checkpoint, store: Store) -> None:
    """Refuse a store whose features differ from the checkpoint's, naming the differences."""
    diffs = describe_differences(ckpt.feature_config, store.feature_config)
    if diffs:
        raise CheckpointError(f"{ckpt.path} was trained on features unlike {store.path}'s: "
                              f"{'; '.join(diffs)}; featurize with the checkpoint's settings")
    if ckpt.family == "descriptors" and len(store.descriptor_names) != ckpt.input_shape[0]:
        raise CheckpointError(f"{ckpt.path} expects {ckpt.input_shape[0]} descriptors, "
                              f"{store.path} has {len(store.descriptor_names)}")
