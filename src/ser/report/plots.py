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


def _save(fig, path: str | Path, *, dpi: int = 100, title: str = "", tight: str = "layout") -> Path:
    """Finish a figure the same way everywhere: optional title, tight layout (or tight bounding
    box), PNG at ``dpi``, and close it so figures never pile up in a long run."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    if tight == "layout":
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    else:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


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
    return _save(fig, path, dpi=100)


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
    return _save(fig, path, dpi=100, title=title)


# -- corpus exploration (ser explore) ----------------------------------------------------------
def plot_counts(labels: Sequence[str], counts: Sequence[int], path: str | Path, *, title: str,
                xlabel: str) -> Path:
    """Bar plot of clip counts per category (emotion, speaker, sex, ...), each bar annotated."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.32 * n + 1.8), 3.4))
    bars = ax.bar(range(n), counts, color="#4C72B0")
    ax.set_xticks(range(n), [str(v) for v in labels], rotation=90 if n > 12 else 0,
                  fontsize=8 if n > 12 else 10)
    if n <= 40:
        ax.bar_label(bars, fontsize=7 if n > 12 else 9, padding=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips")
    ax.set_title(title)
    ax.set_ylim(0, max(counts, default=0) * 1.15 + 1)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, dpi=100)


def plot_durations(durations_s: np.ndarray, path: str | Path, *, title: str) -> Path:
    """Histogram of clip durations (seconds), with the median marked."""
    plt = _pyplot()
    d = np.asarray(durations_s, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins: Any = int(np.clip(np.sqrt(d.size), 5, 40))
    if d.size and np.ptp(d) < 1e-3:  # one length for all (EmoDB here is cut to 2.0 s): centre its bar
        half = max(0.25, 0.1 * float(d[0]))
        bins = np.linspace(d[0] - half, d[0] + half, 12)
    ax.hist(d, bins=bins, color="#55A868", edgecolor="white")
    if d.size:
        med = float(np.median(d))
        ax.axvline(med, color="black", linestyle="--", linewidth=1, label=f"median {med:.2f} s")
        ax.legend()
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("clips")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, dpi=100)


def plot_clip(y: np.ndarray, sr: int, stft_db: np.ndarray, path: str | Path, *, hop_length: int,
              title: str, y_axis: str = "log") -> Path:
    """One clip: waveform ``y`` ``(n,)`` above its STFT magnitude in dB ``(1 + n_fft/2, frames)``."""
    import librosa.display

    plt = _pyplot()
    fig, (ax_w, ax_s) = plt.subplots(2, 1, figsize=(7.5, 5.2), sharex=True,
                                     gridspec_kw={"height_ratios": [1, 2]})
    wave = librosa.display.waveshow(y, sr=sr, ax=ax_w, color="#4C72B0")
    # a static PNG never zooms: drop the adaptive callback, which redraws the figure on every
    # x-limit change (the shared axis below would trigger it again)
    wave.disconnect()
    ax_w.set_ylabel("amplitude")
    ax_w.set_title(title)
    ax_w.label_outer()
    img = librosa.display.specshow(stft_db, sr=sr, hop_length=hop_length, x_axis="time",
                                   y_axis=y_axis, ax=ax_s, cmap="magma")
    ax_s.set_xlabel("time (s)")
    ax_s.set_ylabel("frequency (Hz)")
    ax_s.set_title("STFT magnitude (dB re. peak)", fontsize=9)
    fig.colorbar(img, ax=[ax_w, ax_s], format="%+2.0f dB", label="dB", pad=0.02)
    return _save(fig, path, dpi=90, tight="bbox")


def plot_descriptor_boxes(values: dict[str, dict[str, np.ndarray]], path: str | Path, *,
                          ylabels: dict[str, str] | None = None, title: str = "") -> Path:
    """Box plots of descriptors per emotion: ``values[descriptor][emotion]`` is ``(clips,)``."""
    plt = _pyplot()
    names = list(values)
    ncols = min(2, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        emotions = list(values[name])
        ax.boxplot([values[name][e] for e in emotions], tick_labels=emotions, showfliers=True,
                   flierprops={"markersize": 2})
        ax.set_title(name)
        ax.set_xlabel("emotion")
        ax.set_ylabel((ylabels or {}).get(name, name))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.remove()
    return _save(fig, path, dpi=90, title=title)


def plot_mean_mels(means: dict[str, np.ndarray], counts: dict[str, int], path: str | Path, *,
                   sr: int, hop_length: int, title: str = "") -> Path:
    """A grid of average mel-dB images, one per emotion: ``means[emotion]`` is ``(n_mels, frames)``
    (NaN where no clip reaches a frame), on HTK mel bands from 0 Hz to ``sr / 2``, one colour scale."""
    import librosa.display

    plt = _pyplot()
    emotions = list(means)
    ncols = min(4, len(emotions))
    nrows = -(-len(emotions) // ncols)
    finite = np.concatenate([m[np.isfinite(m)] for m in means.values()] or [np.zeros(1)])
    vmin, vmax = (float(np.percentile(finite, 1)), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 1, 2.9 * nrows), squeeze=False)
    img = None
    for ax, emotion in zip(axes.flat, emotions):
        # NaN (frames no clip reaches) is left blank: pcolormesh masks invalid values itself
        img = librosa.display.specshow(np.asarray(means[emotion], dtype=float), sr=sr,
                                       hop_length=hop_length, x_axis="time", y_axis="mel",
                                       htk=True, fmin=0.0, fmax=sr / 2.0, ax=ax, cmap="magma",
                                       vmin=vmin, vmax=vmax)
        ax.set_title(f"{emotion} (n={counts.get(emotion, 0)})", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel frequency (Hz)")
        ax.label_outer()
    for ax in list(axes.flat)[len(emotions):]:
        ax.remove()
    if img is not None:
        fig.colorbar(img, ax=list(axes.flat)[: len(emotions)], format="%+2.0f dB", label="mel power (dB)")
    return _save(fig, path, dpi=90, title=title, tight="bbox")


def plot_mel_profiles(profiles: dict[str, np.ndarray], band_hz: np.ndarray, path: str | Path, *,
                      title: str = "") -> Path:
    """Time-averaged mel-dB spectrum per emotion: ``profiles[emotion]`` is ``(n_mels,)`` and
    ``band_hz`` ``(n_mels,)`` the bands' centre frequencies (ticks are labelled in Hz)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for emotion, profile in profiles.items():
        ax.plot(np.arange(profile.shape[0]), profile, label=emotion, linewidth=1.4)
    n = len(band_hz)
    ticks = np.unique(np.linspace(0, n - 1, min(n, 7)).round().astype(int))
    ax.set_xticks(ticks, [f"{band_hz[t]:.0f}" for t in ticks])
    ax.set_xlabel("mel band centre (Hz)")
    ax.set_ylabel("mean mel power (dB)")
    ax.set_title(title or "average mel spectrum per emotion")
    ax.grid(alpha=0.3)
    ax.legend(ncol=min(4, max(1, len(profiles))), fontsize=8)
    return _save(fig, path, dpi=90)
