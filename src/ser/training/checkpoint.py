"""Checkpoints: everything evaluate and predict need, loadable without running code.

A checkpoint is a dict of tensors and plain data (str, int, float, lists, dicts), saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``, so a malicious file cannot
execute code. Configs travel as JSON strings. A SHA-256 of the whole content (``sha256``) is
checked on load: torch's zip container does not verify its own data, and a damaged checkpoint
must be refused, not silently loaded with wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ser.errors import CheckpointError
from ser.training.models import SerNet, build_model
from ser.training.speakers import MEL_METHOD
from ser.store import Store, describe_differences

CHECKPOINT_VERSION = 1


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (every key but ``sha256``): tensors by dtype, shape and
    bytes, plain data by type and repr. Stable across save and load."""
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            h.update(b"{")
            for key in sorted(obj, key=repr):
                feed(key)
                feed(obj[key])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[" if isinstance(obj, list) else b"(")
            for value in obj:
                feed(value)
            h.update(b"]")
        else:
            h.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed({k: v for k, v in payload.items() if k != "sha256"})
    return h.hexdigest()


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
        "speaker_norm_mel_method": MEL_METHOD,
    }
    if extra:
        payload.update(extra)
    payload["sha256"] = content_digest(payload)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load safely (``weights_only=True``) and rebuild the model; clear errors for bad files."""
    path = Path(path)
    raw = read_payload(path)
    if raw.get("fusion"):
        raise CheckpointError(f"{path} is a fusion of {len(raw['members'])} checkpoints, not one model; "
                              "load it with ser.training.fusion.load_model")
    return checkpoint_from_payload(raw, path)


def read_payload(path: Path) -> dict[str, Any]:
    """A checkpoint file's dict, loaded with ``weights_only=True`` and checked against its SHA-256."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than tensors and "
                              f"plain data, which could run code ({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged zip or pickle stream fails in many ways
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict) or raw.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: not a ser checkpoint (version {raw.get('checkpoint_version') if isinstance(raw, dict) else None})")
    try:
        damaged = "sha256" in raw and raw["sha256"] != content_digest(raw)
    except Exception:  # noqa: BLE001 - content too mangled to hash is damaged too
        damaged = True
    if damaged:
        raise CheckpointError(f"{path}: the checkpoint is damaged (its content does not match its SHA-256); "
                              "use another copy or train again")
    return raw


def checkpoint_from_payload(raw: dict[str, Any], path: Path) -> Checkpoint:
    """The :class:`Checkpoint` a verified payload describes, its model rebuilt in eval mode."""
    try:
        hparams = json.loads(raw["hparams"])
        input_shape = tuple(int(v) for v in raw["input_shape"])
        labels = list(raw["labels"])
        state = raw["state_dict"]
        model = build_model(raw["model_name"], input_shape=input_shape, n_classes=len(labels),
                            hparams=hparams, mean=state["input_mean"], std=state["input_std"])
        model.load_state_dict(state)
        ckpt = Checkpoint(path=path, model_name=raw["model_name"], hparams=hparams, family=raw["family"],
                          labels=labels, feature_config=json.loads(raw["feature_config"]),
                          input_shape=input_shape, train_config=json.loads(raw["train_config"]),
                          store_path=str(raw["store_path"]), store_fingerprint=str(raw["store_fingerprint"]),
                          history=json.loads(raw["history"]), epoch=int(raw["epoch"]), model=model, raw=raw)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: checkpoint is damaged, incomplete or does not fit its model "
                              f"({type(exc).__name__}: {exc})") from None
    _check_mel_method(ckpt)
    model.eval()
    return ckpt


def _check_mel_method(ckpt: Checkpoint) -> None:
    """Refuse a per-speaker mel model whose standardisation ser no longer computes."""
    if ckpt.family == "mel" and ckpt.train_config.get("speaker_norm") \
            and ckpt.raw.get("speaker_norm_mel_method", 1) != MEL_METHOD:
        raise CheckpointError(f"{ckpt.path}: trained with per-speaker mel statistics that counted each clip's "
                              "padding (a ser before padding was left out); evaluate and predict would feed it "
                              "other inputs than it learned from: train it again")


def load_resume_state(path: str | Path, train_config: dict[str, Any], store: Store) -> dict[str, Any] | None:
    """What ``train --resume`` continues from: ``last.pt``'s weights, optimizer state, epoch,
    early-stopping state, history and RNG states; None when there is no ``path``.

    Loaded with ``weights_only=True`` like every checkpoint. Refused (:class:`CheckpointError`)
    when the run was made with other arguments (only ``epochs`` may differ) or on another store.
    """
    path = Path(path)
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    raw = ckpt.raw
    state = raw.get("resume")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} carries no resume state (written by an older ser or a baseline); "
                              "train again without --resume")
    old = {k: v for k, v in ckpt.train_config.items() if k != "epochs"}
    new = {k: v for k, v in json.loads(json.dumps(train_config, sort_keys=True)).items() if k != "epochs"}
    diffs = describe_differences(old, new)
    if diffs:
        raise CheckpointError(f"{path} was trained with other arguments ({'; '.join(diffs)}); resume with the "
                              "same ones (only --epochs may change), or train into another --out")
    if raw["store_fingerprint"] != store.fingerprint():
        raise CheckpointError(f"{path} was trained on another store ({raw['store_path']}, fingerprint "
                              f"{raw['store_fingerprint']}); resume it on that store")
    try:
        best = state["best"]
        out = {
            "state_dict": raw["state_dict"], "optimizer": state["optimizer"], "epoch": int(state["epoch"]),
            "history": ckpt.history, "best": (float(best[0]), float(best[1]), int(best[2])),
            "stale": int(state["stale"]), "rng_shuffle": state["rng_shuffle"], "rng_torch": state["rng_torch"],
            "rng_cuda": list(state.get("rng_cuda") or []),
        }
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: resume state is incomplete ({exc}); train again without --resume") from None
    if out["epoch"] != ckpt.epoch or len(out["history"]) != out["epoch"]:
        raise CheckpointError(f"{path}: resume state disagrees with its history (epoch {out['epoch']}, "
                              f"{len(out['history'])} history rows); train again without --resume")
    for key in ("rng_shuffle", "rng_torch"):
        if not (isinstance(out[key], torch.Tensor) and out[key].dtype == torch.uint8):
            raise CheckpointError(f"{path}: resume state has no valid {key}; train again without --resume")
    return out


def check_compatible(ckpt: Checkpoint, store: Store) -> None:
    """Refuse a store whose features differ from the checkpoint's, naming the differences."""
    diffs = describe_differences(ckpt.feature_config, store.feature_config)
    if diffs:
        raise CheckpointError(f"{ckpt.path} was trained on features unlike {store.path}'s: "
                              f"{'; '.join(diffs)}; featurize with the checkpoint's settings")
    if ckpt.family == "descriptors" and len(store.descriptor_names) != ckpt.input_shape[0]:
        raise CheckpointError(f"{ckpt.path} expects {ckpt.input_shape[0]} descriptors, "
                              f"{store.path} has {len(store.descriptor_names)}")
