"""Every figure the project draws; the only module that imports matplotlib (Agg, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy curves per epoch (train and validation) as a PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        val = [h[f"val_{key}"] for h in history]
        if not all(np.isnan(v) for v in val):
            ax.plot(epochs, val, label="validation")
        if key == "accuracy" and "val_macro_f1" in history[0]:
            f1 = [h["val_macro_f1"] for h in history]
            if not all(np.isnan(v) for v in f1):
                ax.plot(epochs, f1, label="validation macro-F1", linestyle="--")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusion(counts: np.ndarray, labels: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Confusion matrix side by side: counts, and row-normalised (recall per true class)."""
    plt = _pyplot()
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    n = len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(6 + 1.0 * n, 3 + 0.5 * n))
    for ax, mat, fmt, sub in ((axes[0], counts, "d", "counts"), (axes[1], norm, ".2f", "row-normalised")):
        im = ax.imshow(mat, cmap="Blues", vmin=0)
        ax.set_xticks(range(n), labels, rotation=45)
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
        top = mat.max() if mat.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, format(mat[i, j], fmt), ha="center", va="center", fontsize=8,
                        color="white" if top and mat[i, j] > 0.6 * top else "black")
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
