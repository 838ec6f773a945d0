"""Decoding audio files into validated mono float32 waveforms at a target rate.

The only place that opens audio files. Every problem becomes an :class:`AudioError` whose
message names the file and the reason, so a batch job can record it and move on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ser.errors import AudioError, SerError

#: File extensions treated as audio when guarding outputs: no output path may overwrite one.
AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                                   ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64", ".m4a", ".wma")
#: Channels beyond this are refused: a corrupt header must not make one read allocate gigabytes.
MAX_CHANNELS = 64
_RATE_RANGE = (100, 1_000_000)  # Hz: anything outside is a corrupt header, not a recording


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
    _check_readable(path)
    try:
        with sf.SoundFile(str(path)) as f:
            native_sr, channels, total = f.samplerate, f.channels, f.frames
            if not _RATE_RANGE[0] <= native_sr <= _RATE_RANGE[1]:
                raise AudioError(f"{path}: implausible sample rate {native_sr} Hz (corrupt header?)")
            if not 1 <= channels <= MAX_CHANNELS:
                raise AudioError(f"{path}: {channels} channels (corrupt header?); at most {MAX_CHANNELS} are read")
            n_read = total if max_seconds is None else min(total, int(round(max_seconds * native_sr)))
            # only the first max_seconds are decoded: a ten-minute file costs what a short one does
            data = f.read(n_read, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioError(f"{path}: cannot decode audio (truncated, damaged or not audio: "
                         f"{_short(exc)})") from None
    except MemoryError:
        raise AudioError(f"{path}: header asks for more memory than is available (corrupt header?)") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if data.shape[0] < n_read:  # the header promised more frames than the file holds
        total = data.shape[0]
    duration_s = total / native_sr
    y = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    # Check before resampling: NaN/Inf would spread through the resampler.
    check_audio(y, path=path, min_samples=1)
    if native_sr != sr:
        import librosa  # resampling is the rare path; keep the import off the hot path

        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    y = np.ascontiguousarray(y, dtype=np.float32)
    check_audio(y, path=path, min_samples=min_samples)
    return y, float(duration_s)


def _check_readable(path: Path) -> None:
    """Open ``path`` with Python first: libsndfile reports permission and folder problems as
    "format not recognised", and an empty file deserves its own reason."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except FileNotFoundError:
        raise AudioError(f"{path}: file not found") from None
    except PermissionError:
        raise AudioError(f"{path}: permission denied (cannot open the file for reading)") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a folder, not an audio file") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not head:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _short(exc: Exception) -> str:
    """libsndfile's reason without the path it repeats: "Error opening 'x.wav': Format not recognised."."""
    text = str(exc).strip()
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def is_audio_path(path: str | Path) -> bool:
    """Whether ``path`` has an audio file extension (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def refuse_audio_overwrite(path: str | Path, *, option: str = "--out") -> None:
    """Raise :class:`SerError` when an output ``path`` is an existing audio file.

    No command may overwrite audio: a mistyped ``--out`` must never cost a recording.
    """
    p = Path(path)
    if p.is_file() and is_audio_path(p):
        raise SerError(f"{option} {p} is an existing audio file; refusing to overwrite it "
                       "(choose another path)")


def refuse_output_inside(out: str | Path, folder: str | Path, *, option: str = "--out",
                         what: str = "the audio folder") -> None:
    """Raise :class:`SerError` when ``out`` is ``folder`` or lies inside it (symlinks resolved)."""
    o, f = Path(out).resolve(), Path(folder).resolve()
    if o == f or o.is_relative_to(f):
        raise SerError(f"{option} {out} lies inside {what} {folder}; files written there would mix "
                       "with (or replace) the input audio; choose a folder outside it")
