"""Emotion and class probabilities for new audio, through featurize's own feature code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .audio import load_audio
from .checkpoint import load_checkpoint
from .errors import AudioError
from .features import FeatureConfig, extract


def predict_files(checkpoint: str | Path, files: Sequence[str | Path], *, device: str = "cpu") -> list[dict[str, Any]]:
    """One result per file: ``{"file", "emotion", "probabilities": {label: p}}`` or ``{"file", "error"}``."""
    ckpt = load_checkpoint(checkpoint)
    cfg = FeatureConfig.from_dict(ckpt.feature_config)
    model = ckpt.model.to(device).eval()
    results: list[dict[str, Any]] = []
    for f in files:
        try:
            y, _ = load_audio(f, sr=cfg.sample_rate, max_seconds=cfg.max_seconds, min_samples=cfg.n_fft // 4)
        except AudioError as exc:
            results.append({"file": str(f), "error": str(exc)})
            continue
        feats = extract(y, cfg)
        x = torch.from_numpy(feats[ckpt.family][None]).to(device)
        with torch.no_grad():
            p = torch.softmax(model(x).float(), dim=1)[0].cpu().numpy()
        results.append({"file": str(f), "emotion": ckpt.labels[int(np.argmax(p))],
                        "probabilities": {lab: float(v) for lab, v in zip(ckpt.labels, p)}})
    return results
