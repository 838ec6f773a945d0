"""Waveform augmentations: pure functions of ``(y, sr, rng)``.

Each takes a mono float32 waveform of shape ``(n,)`` and a :class:`numpy.random.Generator`
and returns a new float32 waveform (the length may change for ``stretch``). Only training
clips are augmented (see :mod:`ser.featurize`); every draw comes from the generator passed in.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .errors import SerError

Augmentation = Callable[..., np.ndarray]


def add_noise(y: np.ndarray, *, sr: int, rng: np.random.Generator,
              snr_db: tuple[float, float] = (15.0, 30.0)) -> np.ndarray:
    """Add white Gaussian noise at a signal-to-noise ratio drawn from ``snr_db`` (dB)."""
    snr = rng.uniform(*snr_db)
    signal_rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    noise_rms = signal_rms / (10.0 ** (snr / 20.0))
    return (y + noise_rms * rng.standard_normal(y.shape[0])).astype(np.float32)


def time_stretch(y: np.ndarray, *, sr: int, rng: np.random.Generator,
                 rates: tuple[float, float] = (0.8, 1.25)) -> np.ndarray:
    """Change the tempo by a rate drawn log-uniformly from ``rates``; pitch is kept."""
    import librosa

    rate = float(np.exp(rng.uniform(np.log(rates[0]), np.log(rates[1]))))
    return librosa.effects.time_stretch(y, rate=rate).astype(np.float32)


def time_shift(y: np.ndarray, *, sr: int, rng: np.random.Generator,
               max_shift_s: float = 0.3) -> np.ndarray:
    """Shift the signal in time by up to ``max_shift_s`` seconds either way, zero-filling.

    Zero-filling rather than rolling keeps the end of an utterance from wrapping to its start.
    A clip shorter than twice the shift moves by at most half its length, so it never
    leaves the frame entirely (and the slices below always have matching lengths).
    """
    limit = min(int(max_shift_s * sr), y.shape[0] // 2)
    k = int(rng.integers(-limit, limit + 1))
    out = np.zeros_like(y)
    if k >= 0:
        out[k:] = y[: y.shape[0] - k]
    else:
        out[:k] = y[-k:]
    return out


def pitch_shift(y: np.ndarray, *, sr: int, rng: np.random.Generator,
                semitones: tuple[float, float] = (-2.0, 2.0)) -> np.ndarray:
    """Shift the pitch by a number of semitones drawn from ``semitones``; tempo is kept."""
    import librosa

    steps = float(rng.uniform(*semitones))
    return librosa.effects.pitch_shift(y, sr=sr, n_steps=steps).astype(np.float32)


#: Augmentations by the name stored in the ``augment`` column; order is the row order.
AUGMENTATIONS: dict[str, Augmentation] = {
    "noise": add_noise,
    "stretch": time_stretch,
    "shift": time_shift,
    "pitch": pitch_shift,
}


def parse_augment(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"noise,stretch"`` -> ``("noise", "stretch")``; ``"none"``/empty -> ``()``."""
    if text is None:
        return ()
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t and t != "none"]
    unknown = [t for t in items if t not in AUGMENTATIONS]
    if unknown:
        raise SerError(f"unknown augmentation(s) {', '.join(unknown)}; "
                       f"known: {', '.join(AUGMENTATIONS)} or none")
    # Keep the canonical order so the same set always gives the same store.
    return tuple(name for name in AUGMENTATIONS if name in items)


def clip_rng(seed: int, clip_id: str, augment: str) -> np.random.Generator:
    """The generator for one (clip, augmentation): independent of worker and clip order."""
    import zlib

    return np.random.default_rng(
        [seed, zlib.crc32(clip_id.encode("utf-8")), zlib.crc32(augment.encode("utf-8"))]
    )


def variants(y: np.ndarray, *, sr: int, clip_id: str, augment: Sequence[str],
             seed: int) -> list[tuple[str, np.ndarray]]:
    """The original (``"none"``) followed by one augmented copy per name in ``augment``."""
    out = [("none", y)]
    for name in augment:
        out.append((name, AUGMENTATIONS[name](y, sr=sr, rng=clip_rng(seed, clip_id, name))))
    return out
