"""Waveform augmentations: pure functions of ``(y, sr, rng)``.

Each takes a mono float32 waveform of shape ``(n,)`` and a :class:`numpy.random.Generator`
and returns a new float32 waveform (the length may change for ``stretch``). Only training
clips are augmented (see :mod:`ser.featurize.job`); every draw comes from the generator passed in
(the noise itself is a stretch of a fixed bank, at an offset drawn from it).

Time stretch and pitch shift are librosa's ``effects.time_stretch`` and ``effects.pitch_shift``
(a phase vocoder over 2048-sample Hann frames, hop 512, then soxr's HQ resampler for the pitch)
restated in numpy: librosa's vocoder loops over output frames in Python (~18 ms for a 2.5 s
clip here), this one is a handful of array operations (~1.7 ms) and needs no librosa import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ser.errors import SerError

Augmentation = Callable[..., np.ndarray]


#: Phase vocoder frames: librosa.effects.time_stretch's defaults (n_fft 2048, hop n_fft // 4).
PV_N_FFT = 2048
PV_HOP = 512


#: Samples in the noise bank (4 MiB of float32, ~65 s at 16 kHz) and the seed it is drawn with.
NOISE_BANK_SAMPLES = 1 << 20
NOISE_BANK_SEED = 20260


@lru_cache(maxsize=1)
def noise_bank() -> np.ndarray:
    """White Gaussian noise (unit variance, float32) drawn once per process with a fixed seed,
    so every process holds the same bank and a store does not depend on the worker count."""
    bank = np.random.default_rng(NOISE_BANK_SEED).standard_normal(NOISE_BANK_SAMPLES, dtype=np.float32)
    bank.setflags(write=False)
    return bank


def add_noise(y: np.ndarray, *, sr: int, rng: np.random.Generator,
              snr_db: tuple[float, float] = (15.0, 30.0)) -> np.ndarray:
    """Add white Gaussian noise at a signal-to-noise ratio drawn from ``snr_db`` (dB).

    The noise is a stretch of :func:`noise_bank` at an offset and with a sign drawn from
    ``rng`` (fresh draws for a waveform longer than the bank): drawing 40,000 normals for
    every clip cost more than the rest of this function ten times over. Two clips' noise may
    overlap in the bank, shifted against each other; for a perturbation added at 15-30 dB
    below the speech, that does not matter.
    """
    snr = rng.uniform(*snr_db)
    signal_rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    noise_rms = np.float32(signal_rms / (10.0 ** (snr / 20.0)))
    n, bank = y.shape[0], noise_bank()
    if n <= bank.shape[0]:
        at = int(rng.integers(0, bank.shape[0] - n + 1))
        noise = bank[at:at + n] * (noise_rms if rng.integers(2) else -noise_rms)
    else:
        noise = rng.standard_normal(n, dtype=np.float32)
        noise *= noise_rms
    noise += y
    return noise


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (librosa's and torch's), read-only: it is shared."""
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    w.setflags(write=False)
    return w


@dataclass(frozen=True, eq=False)
class _Analysis:
    """A waveform's phase-vocoder analysis: its STFT as magnitudes and unit phasors."""

    n: int               # samples of the waveform
    n_fft: int
    hop: int
    mag: np.ndarray      # (frames + 2, bins) float32; librosa pads two zero frames
    rise: np.ndarray     # (frames + 1, bins) float32: mag[t + 1] - mag[t]
    advance: np.ndarray  # (frames + 1, bins) complex64: e^{i (angle[t + 1] - angle[t])}
    start: np.ndarray    # (bins,) complex64: e^{i angle[0]}, the first output frame's phase


def _analyse(y: np.ndarray, n_fft: int, hop: int) -> _Analysis:
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(np.asarray(y, dtype=np.float32), n_fft // 2)  # librosa's stft: centred, zeros
    frames = sliding_window_view(padded, n_fft)[::hop]
    spec = np.zeros((frames.shape[0] + 2, 1 + n_fft // 2), dtype=np.complex64)
    spec[:-2] = scipy.fft.rfft(frames * _hann(n_fft), axis=-1)
    mag = np.abs(spec)
    unit = spec * (1.0 / np.maximum(mag, np.finfo(np.float32).tiny))
    silent = mag == 0
    if silent.any():
        unit[silent] = 1.0  # angle(0) = 0: a silent bin keeps the phase it had
    advance = unit[1:] * np.conj(unit[:-1])
    return _Analysis(y.shape[0], n_fft, hop, mag, mag[1:] - mag[:-1], advance, unit[0])


#: The waveform whose analysis :func:`variants` lets stretch and pitch shift share, per thread.
_shared = threading.local()


def _analysis(y: np.ndarray, n_fft: int, hop: int) -> _Analysis:
    if getattr(_shared, "source", None) is not y:
        return _analyse(y, n_fft, hop)
    a = _shared.analysis
    if a is None or (a.n_fft, a.hop) != (n_fft, hop):
        a = _shared.analysis = _analyse(y, n_fft, hop)
    return a


def stretch(y: np.ndarray, rate: float, *, n_fft: int = PV_N_FFT, hop: int = PV_HOP) -> np.ndarray:
    """Phase-vocoder time stretch by ``rate`` (> 1 faster): ``(n,) -> (round(n / rate),)`` float32.

    librosa's ``effects.time_stretch`` (``stft`` centred with zero padding, ``phase_vocoder``,
    ``istft``) restated without its per-frame Python loop. librosa accumulates each output
    frame's phase as ``phase += phi + wrap(angle(D[t+1]) - angle(D[t]) - phi)``, which equals
    ``angle(D[t+1]) - angle(D[t])`` modulo 2 pi; only its exponential is used, so the
    accumulation is a cumulative product of unit phasors ``u[t+1] * conj(u[t])``, and no angle,
    wrap, sine or cosine is computed. ``n_fft`` must be a multiple of ``hop``.
    """
    import scipy.fft

    if rate <= 0:
        raise SerError(f"stretch rate must be positive, got {rate}")
    r = n_fft // hop
    if r * hop != n_fft:
        raise SerError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")
    a = _analysis(y, n_fft, hop)
    n_out = int(round(a.n / rate))
    frames = a.mag.shape[0] - 2

    steps = np.arange(0, frames, rate, dtype=np.float64)
    i = steps.astype(np.int64)
    alpha = (steps - i).astype(np.float32)[:, None]
    stretched = np.empty((steps.shape[0], a.start.shape[0]), dtype=np.complex64)
    stretched[0] = a.start
    np.take(a.advance, i[:-1], axis=0, out=stretched[1:])
    for t in range(1, stretched.shape[0]):  # the running product, a row at a time: numpy's
        stretched[t] *= stretched[t - 1]      # cumprod over axis 0 is several times slower
    magnitude = a.rise[i]  # (1 - alpha) mag[i] + alpha mag[i + 1]
    magnitude *= alpha
    magnitude += a.mag[i]
    stretched *= magnitude

    # istft: inverse transform, window, overlap-add, divide by the summed squared window
    window = _hann(n_fft)
    n_frames = min(stretched.shape[0], -(-(n_out + 2 * (n_fft // 2)) // hop))  # librosa's trim
    chunks = (scipy.fft.irfft(stretched[:n_frames], n=n_fft, axis=-1) * window).reshape(n_frames, r, hop)
    signal = np.zeros((n_frames + r - 1, hop), dtype=np.float32)
    envelope = np.zeros_like(signal)
    square = (window * window).reshape(r, hop)
    for j in range(r):
        signal[j: j + n_frames] += chunks[:, j]
        envelope[j: j + n_frames] += square[j]
    signal, envelope = signal.ravel()[n_fft // 2:], envelope.ravel()[n_fft // 2:]
    result = np.zeros(n_out, dtype=np.float32)
    k = min(n_out, signal.shape[0])
    nonzero = envelope[:k] > np.finfo(np.float32).tiny
    np.divide(signal[:k], envelope[:k], out=result[:k], where=nonzero)
    result[:k][~nonzero] = signal[:k][~nonzero]
    return result


def time_stretch(y: np.ndarray, *, sr: int, rng: np.random.Generator,
                 rates: tuple[float, float] = (0.8, 1.25)) -> np.ndarray:
    """Change the tempo by a rate drawn log-uniformly from ``rates``; pitch is kept."""
    rate = float(np.exp(rng.uniform(np.log(rates[0]), np.log(rates[1]))))
    return stretch(y, rate)


#: time_shift's defaults: at most 0.3 s either way, in steps of 16 ms (one STFT hop at 16 kHz).
MAX_SHIFT_S = 0.3
SHIFT_STEP_S = 0.016


def time_shift(y: np.ndarray, *, sr: int, rng: np.random.Generator,
               max_shift_s: float = MAX_SHIFT_S, step_s: float = SHIFT_STEP_S) -> np.ndarray:
    """Shift the signal in time by up to ``max_shift_s`` seconds either way, zero-filling.

    Zero-filling rather than rolling keeps the end of an utterance from wrapping to its start.
    A clip shorter than twice the shift moves by at most half its length, so it never
    leaves the frame entirely (and the slices below always have matching lengths).

    The shift is a whole number of ``step_s`` (16 ms: 256 samples at 16 kHz, the default STFT
    hop), so the shifted copy's STFT frames are the original's and
    :func:`ser.features.extractor.extract_many` computes them once, told the shift by
    :func:`variants` (:func:`shift_samples` draws it). A clip too short for one step shifts by
    whole samples.
    """
    return shifted(y, shift_samples(y.shape[0], sr=sr, rng=rng, max_shift_s=max_shift_s, step_s=step_s))


def shift_samples(n: int, *, sr: int, rng: np.random.Generator, max_shift_s: float = MAX_SHIFT_S,
                  step_s: float = SHIFT_STEP_S) -> int:
    """The shift :func:`time_shift` applies to a clip of ``n`` samples, in samples (one draw)."""
    limit = min(int(max_shift_s * sr), n // 2)
    step = max(1, int(round(step_s * sr)))
    if limit < step:
        step = 1
    return step * int(rng.integers(-(limit // step), limit // step + 1))


def shifted(y: np.ndarray, k: int) -> np.ndarray:
    """``y`` moved ``k`` samples later (earlier if negative), zero-filled, same length."""
    out = np.zeros_like(y)
    if k >= 0:
        out[k:] = y[: y.shape[0] - k]
    else:
        out[:k] = y[-k:]
    return out


def pitch_shift(y: np.ndarray, *, sr: int, rng: np.random.Generator,
                semitones: tuple[float, float] = (-2.0, 2.0)) -> np.ndarray:
    """Shift the pitch by a number of semitones drawn from ``semitones``; tempo is kept.

    librosa's ``effects.pitch_shift``: stretch by ``2 ** (-steps / 12)``, resample (soxr HQ)
    from ``sr / rate`` back to ``sr``, and cut or zero-pad to the input's length.
    """
    import soxr

    steps = float(rng.uniform(*semitones))
    rate = 2.0 ** (-steps / 12.0)
    shifted = soxr.resample(stretch(y, rate), sr / rate, sr, quality="HQ")
    out = np.zeros(y.shape[0], dtype=np.float32)
    k = min(out.shape[0], shifted.shape[0])
    out[:k] = shifted[:k]
    return out


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


class Variant(NamedTuple):
    """One waveform of a clip: the original or an augmented copy."""

    name: str             # "none" for the original, else the augmentation's name
    wave: np.ndarray      # (n,) float32
    shift: int | None     # the original moved this many samples later (earlier if < 0),
                          # zero-filled; None: not a shifted copy of the original


def variants(y: np.ndarray, *, sr: int, clip_id: str, augment: Sequence[str], seed: int) -> list[Variant]:
    """The original (``"none"``, shift 0) followed by one augmented copy per name in ``augment``.

    The time-shifted copy carries its shift, so that the features need not look for it
    (:func:`ser.features.extractor.extract_variants`). Time stretch and pitch shift of the same
    waveform share one phase-vocoder analysis (the results are the same as separate calls').
    """
    out = [Variant("none", y, 0)]
    _shared.source, _shared.analysis = y, None
    try:
        for name in augment:
            rng = clip_rng(seed, clip_id, name)
            if name == "shift":  # time_shift's own draw, kept to hand the shift over
                k = shift_samples(y.shape[0], sr=sr, rng=rng)
                out.append(Variant(name, shifted(y, k), k))
            else:
                out.append(Variant(name, AUGMENTATIONS[name](y, sr=sr, rng=rng), None))
    finally:
        _shared.source = _shared.analysis = None
    return out
