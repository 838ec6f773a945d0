"""Decoding audio files into validated mono float32 waveforms at a target rate.

The only place that opens audio files. Every problem becomes an :class:`AudioError` whose
message names the file and the reason, so a batch job can record it and move on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import AudioError


def check_audio(y: np.ndarray, *, path: str | Path = "<array>", min_samples: int = 1) -> None:
    """Raise :class:`AudioError` unless ``y`` is finite, non-silent mono float audio.

    ``y`` has shape ``(n,)``; ``min_samples`` is the shortest usable length (one FFT frame).
    """
    if y.ndim != 1:
        raise AudioError(f"{path}: expected mono audio, got shape {y.shape}")
    if y.size == 0:
        raise AudioError(f"{path}: no audio samples (empty clip)")
    if not np.all(np.isfinite(y)):
        raise AudioError(f"{path}: audio contains NaN or Inf samples")
    if y.size < min_samples:
        raise AudioError(
            f"{path}: clip is {y.size} samples long, shorter than one analysis frame ({min_samples})"
        )
    if not np.any(y):
        raise AudioError(f"{path}: audio is silent (all samples are zero)")


def load_audio(
    path: str | Path, *, sr: int, max_seconds: float | None = None, min_samples: int = 1
) -> tuple[np.ndarray, float]:
    """Decode ``path`` to mono float32 at ``sr`` Hz, cut to ``max_seconds``.

    Returns ``(y, duration_s)``: ``y`` has shape ``(n,)`` with ``n <= max_seconds * sr``, and
    ``duration_s`` is the file's full duration in seconds (before the cut). Only the first
    ``max_seconds`` are read from disk, so a ten-minute file costs no more memory than a short one.
    Stereo is averaged, integer PCM is scaled to [-1, 1], other rates are resampled (soxr).
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    try:
        with sf.SoundFile(str(path)) as f:
            native_sr = f.samplerate
            total = f.frames
            n_read = total if max_seconds is None else min(total, int(round(max_seconds * native_sr)))
            data = f.read(n_read, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        if path.exists() and path.stat().st_size == 0:
            raise AudioError(f"{path}: empty file (0 bytes)") from None
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    duration_s = total / native_sr if native_sr else 0.0
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    # Check before resampling: NaN/Inf would spread through the resampler.
    check_audio(y, path=path, min_samples=1)
    if native_sr != sr:
        import librosa  # resampling is the rare path; keep the import off the hot path

        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    y = np.ascontiguousarray(y, dtype=np.float32)
    check_audio(y, path=path, min_samples=min_samples)
    return y, float(duration_s)
