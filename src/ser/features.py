"""Feature maths: pure functions of ``(y, config)``, no I/O.

Two families come out of one decode and one STFT per waveform:

- **descriptors**: a fixed-length vector of frame statistics (mean, optionally std) of
  zero-crossing rate, RMS energy, spectral centroid/bandwidth/rolloff/flatness, MFCCs,
  chroma, log-mel band energies and spectral contrast (librosa), shape ``(D,)``;
- **mel**: mel power in dB (torchaudio's filterbank and dB conversion), shape
  ``(n_mels, frames)`` with ``frames`` fixed by ``max_seconds``: shorter clips are padded
  with the clip's dB floor, longer ones cut; the true frame count is returned beside it.

Every spectral feature reads the same STFT, so a clip costs one transform, not six.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import SerError

STATS = ("mean", "std")


@dataclass(frozen=True)
class FeatureConfig:
    """What the features are; saved in the store and in every checkpoint."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    max_seconds: float = 4.0
    n_mels: int = 64          # mel bands of the 2D spectrogram
    top_db: float = 80.0      # dynamic range kept below each spectrogram's peak
    n_mfcc: int = 40
    n_desc_mels: int = 128    # mel bands averaged into the descriptor vector
    n_chroma: int = 12
    n_contrast_bands: int = 6
    stats: tuple[str, ...] = ("mean",)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise SerError("sample_rate, n_fft and hop_length must be positive")
        if self.max_seconds <= 0:
            raise SerError(f"max_seconds must be positive, got {self.max_seconds}")
        if self.n_mels <= 0 or self.n_mfcc <= 0 or self.n_desc_mels < self.n_mfcc:
            raise SerError("n_mels and n_mfcc must be positive and n_desc_mels >= n_mfcc")
        bad = [s for s in self.stats if s not in STATS]
        if bad or not self.stats:
            raise SerError(f"stats must be a non-empty subset of {STATS}, got {self.stats}")
        object.__setattr__(self, "stats", tuple(self.stats))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of the fixed-size mel spectrogram (centred STFT)."""
        return 1 + self.max_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stats"] = list(self.stats)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SerError(f"unknown feature config key(s): {', '.join(sorted(unknown))}")
        d = dict(d)
        if "stats" in d:
            d["stats"] = tuple(d["stats"])
        return cls(**d)


def _frame_feature_names(cfg: FeatureConfig) -> list[str]:
    names = ["zcr", "rms", "centroid", "bandwidth", "rolloff", "flatness"]
    names += [f"mfcc{i:02d}" for i in range(cfg.n_mfcc)]
    names += [f"chroma{i:02d}" for i in range(cfg.n_chroma)]
    names += [f"mel{i:03d}" for i in range(cfg.n_desc_mels)]
    names += [f"contrast{i}" for i in range(cfg.n_contrast_bands + 1)]
    return names


def descriptor_names(cfg: FeatureConfig) -> list[str]:
    """Names of the descriptor vector's entries, ``<feature>_<stat>``, in order."""
    base = _frame_feature_names(cfg)
    return [f"{name}_{stat}" for stat in cfg.stats for name in base]


@lru_cache(maxsize=8)
def _window(n_fft: int):
    import torch

    return torch.hann_window(n_fft)


@lru_cache(maxsize=8)
def _torch_mel_fbank(n_freqs: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """torchaudio's mel filterbank (HTK scale, no norm: MelSpectrogram's defaults), (freqs, mels)."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(n_freqs, f_min=0.0, f_max=sample_rate / 2.0, n_mels=n_mels,
                            sample_rate=sample_rate, norm=None, mel_scale="htk")
    return np.ascontiguousarray(fb.numpy().T)  # (mels, freqs)


@lru_cache(maxsize=8)
def _librosa_filters(sr: int, n_fft: int, n_desc_mels: int, n_chroma: int) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_desc_mels)
    chroma = librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma)
    return mel.astype(np.float32), chroma.astype(np.float32)


def stft(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Complex STFT, shape ``(1 + n_fft // 2, 1 + n // hop)``: centred, reflect-padded, Hann.

    This is the one transform every spectral feature reads (torch.stft, as torchaudio's
    MelSpectrogram computes it).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    if x.shape[0] <= cfg.n_fft // 2:
        # reflect padding needs more samples than half a frame: pad with zeros instead
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[0]))
    spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft,
                      window=_window(cfg.n_fft), center=True, pad_mode="reflect",
                      return_complex=True)
    return spec.numpy()


def power_to_db(power: np.ndarray, *, top_db: float | None) -> np.ndarray:
    """``10 log10(power)`` with a floor of 1e-10 and, if ``top_db``, ``top_db`` below the peak.

    Same convention as torchaudio's ``AmplitudeToDB(stype="power")`` and librosa's
    ``power_to_db(ref=1.0)``.
    """
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    if top_db is not None:
        db = np.maximum(db, db.max() - top_db)
    return db.astype(np.float32)


def mel_db_from_power(power: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """Fixed-size mel-dB from a power spectrogram: ``((n_mels, cfg.n_frames), true_frames)``."""
    fb = _torch_mel_fbank(power.shape[0], cfg.n_mels, cfg.sample_rate)
    mel = power_to_db(fb @ power, top_db=cfg.top_db)
    true_frames = min(mel.shape[1], cfg.n_frames)
    out = np.empty((cfg.n_mels, cfg.n_frames), dtype=np.float32)
    out[:, :true_frames] = mel[:, :true_frames]
    out[:, true_frames:] = mel.min()  # pad with the clip's own floor, not 0 dB
    return out, true_frames


def _fit_frames(v: np.ndarray, n_frames: int) -> np.ndarray:
    return v[:n_frames] if v.shape[0] >= n_frames else np.pad(v, (0, n_frames - v.shape[0]), mode="edge")


def _time_domain(y: np.ndarray, cfg: FeatureConfig, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-crossing rate and RMS per centred frame of n_fft samples, each ``(n_frames,)``.

    RMS is taken on the waveform, not the windowed STFT, so it is the signal's true RMS.
    """
    import librosa

    kw = dict(frame_length=cfg.n_fft, hop_length=cfg.hop_length, center=True)
    zcr = librosa.feature.zero_crossing_rate(y, **kw)[0]
    rms = librosa.feature.rms(y=y, **kw)[0]
    return _fit_frames(zcr, n_frames), _fit_frames(rms, n_frames)


def frame_features(y: np.ndarray, spec: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Per-frame descriptors, shape ``(F, frames)`` with rows in :func:`descriptor_names` order."""
    import librosa
    import scipy.fft

    sr = cfg.sample_rate
    mag = np.abs(spec).astype(np.float32)
    power = mag * mag
    freqs = np.linspace(0, sr / 2.0, mag.shape[0], dtype=np.float32)
    n_frames = mag.shape[1]
    mel_basis, chroma_basis = _librosa_filters(sr, cfg.n_fft, cfg.n_desc_mels, cfg.n_chroma)

    zcr, rms = _time_domain(y, cfg, n_frames)
    # centroid and bandwidth as librosa computes them, sharing the normalised magnitude
    norm = mag / np.maximum(mag.sum(axis=0, keepdims=True), 1e-10)
    centroid = freqs @ norm
    bandwidth = np.sqrt(np.sum(norm * (freqs[:, None] - centroid[None, :]) ** 2, axis=0))
    cumulative = np.cumsum(mag, axis=0)
    rolloff_idx = np.argmax(cumulative >= 0.85 * cumulative[-1:], axis=0)
    rolloff = freqs[rolloff_idx]
    flatness = librosa.feature.spectral_flatness(S=mag)[0]

    mel_db = power_to_db(mel_basis @ power, top_db=cfg.top_db)
    mfcc = scipy.fft.dct(mel_db, axis=0, type=2, norm="ortho")[: cfg.n_mfcc]
    chroma = chroma_basis @ power
    chroma = chroma / np.maximum(np.max(np.abs(chroma), axis=0, keepdims=True), 1e-10)
    contrast = librosa.feature.spectral_contrast(S=mag, sr=sr, n_fft=cfg.n_fft,
                                                 n_bands=cfg.n_contrast_bands)
    rows = [zcr[None], rms[None], centroid[None], bandwidth[None], rolloff[None],
            flatness[None], mfcc, chroma, mel_db, contrast]
    return np.concatenate([np.asarray(r, dtype=np.float32) for r in rows], axis=0)


def summarize(frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Frame statistics ``(F, frames) -> (F * len(stats),)`` in :func:`descriptor_names` order."""
    parts = []
    for stat in cfg.stats:
        parts.append(frames.mean(axis=1) if stat == "mean" else frames.std(axis=1))
    return np.concatenate(parts).astype(np.float32)


def extract(y: np.ndarray, cfg: FeatureConfig) -> dict[str, Any]:
    """Both feature families from one STFT of one waveform.

    ``y``: mono float32 ``(n,)`` at ``cfg.sample_rate``, already cut to ``max_seconds``.
    Returns ``{"descriptors": (D,), "mel": (n_mels, cfg.n_frames), "n_frames": int}``.
    """
    y = y[: cfg.max_samples]
    spec = stft(y, cfg)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    mel, n_frames = mel_db_from_power(power, cfg)
    desc = summarize(frame_features(y, spec, cfg), cfg)
    return {"descriptors": desc, "mel": mel, "n_frames": n_frames}
