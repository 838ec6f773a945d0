"""Emotion and class probabilities for new audio, through featurize's own feature code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ser.audio.decode import load_audio
from ser.training.checkpoint import Checkpoint
from ser.training.fusion import Fusion, load_model
from ser.errors import AudioError
from ser.features.config import FeatureConfig
from ser.features.extractor import extract


def predict_files(checkpoint: str | Path, files: Sequence[str | Path], *, device: str = "cpu") -> list[dict[str, Any]]:
    """One result per file: ``{"file", "emotion", "probabilities": {label: p}}`` or ``{"file", "error"}``.

    A checkpoint trained with per-speaker normalisation treats the files given as one speaker's
    clips and standardises them by their own statistics (at least ``speakers.MIN_CLIPS`` files).
    A fusion feeds each member its own family and averages their probabilities.
    """
    ckpt = load_model(checkpoint)
    members = ckpt.members if isinstance(ckpt, Fusion) else [ckpt]
    cfg = FeatureConfig.from_dict(ckpt.feature_config)
    results: list[dict[str, Any]] = []
    feats: list[dict[str, np.ndarray]] = []
    for f in files:
        try:
            y, _ = load_audio(f, sr=cfg.sample_rate, max_seconds=cfg.max_seconds, min_samples=cfg.n_fft // 4)
        except AudioError as exc:
            results.append({"file": str(f), "error": str(exc)})
            continue
        feats.append(extract(y, cfg))
        results.append({"file": str(f)})
    if not feats:
        return results
    probs = [_member_probabilities(m, np.stack([x[m.family] for x in feats]), device) for m in members]
    p = ckpt.combine(probs) if isinstance(ckpt, Fusion) else probs[0]
    ok = iter(p)
    for r in results:
        if "error" not in r:
            row = next(ok)
            r.update(emotion=ckpt.labels[int(np.argmax(row))],
                     probabilities={lab: float(v) for lab, v in zip(ckpt.labels, row)})
    return results


def _member_probabilities(ckpt: Checkpoint, x: np.ndarray, device: str) -> np.ndarray:
    """One checkpoint's class probabilities for the feature rows ``x`` of its family."""
    if ckpt.train_config.get("speaker_norm"):
        from ser.training.speakers import speaker_statistics, standardize

        one = np.zeros(len(x), dtype=object)
        one[:] = "speaker"
        x = standardize(x, one, speaker_statistics(x, one))
    model = ckpt.model.to(device).eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x).to(device)).float(), dim=1).cpu().numpy()
