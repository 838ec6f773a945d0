"""Clip-level functionals beyond frame means: pitch, loudness dynamics and spectral change.

Two optional descriptor groups (``FeatureConfig.extras``), both pure functions of arrays:

- ``prosody``: log-f0 (YIN) statistics over voiced frames (mean, std, percentiles, range,
  voiced fraction, frame-to-frame variability) and RMS loudness percentiles in dB;
- ``dynamics``: how fast the spectrum moves: std and mean magnitude of MFCC deltas, std of
  delta-deltas, and spectral flux statistics.

On EmoDB with per-speaker normalisation they add about 2 points of speaker-independent
accuracy to the frame statistics (see docs/results.md).

Both used to call librosa (``librosa.yin`` and ``librosa.feature.delta``) once per waveform,
and made the recipe's extraction cost 5.4 times the default features' (benchmarks/recipe_cost.py);
now 2.7 times. They compute the same numbers, to the bit
(tests/features/test_prosody.py pins them to librosa), with less work: pitch only for the
frames whose pitch is read (the voiced ones), a clip's variants in one batch, and a shifted
copy's frames taken from the original's (:mod:`ser.features.pitch`); deltas with the
Savitzky-Golay filter's coefficients and edge fits set up once per width, not per call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from ser.features.pitch import Yin, f0_at

F0_MIN_HZ = 60.0
F0_MAX_HZ = 500.0
_PCTS = (5, 25, 50, 75, 95)
N_DYN_MFCC = 20


def prosody_names() -> list[str]:
    return (["logf0_mean", "logf0_std"] + [f"logf0_p{p:02d}" for p in _PCTS]
            + ["logf0_range", "voiced_fraction", "logf0_delta_std", "rms_db_p10", "rms_db_p50", "rms_db_p90"])


def dynamics_names() -> list[str]:
    return ([f"mfcc{i:02d}_delta_std" for i in range(N_DYN_MFCC)]
            + [f"mfcc{i:02d}_delta2_std" for i in range(N_DYN_MFCC)]
            + [f"mfcc{i:02d}_delta_absmean" for i in range(N_DYN_MFCC)] + ["flux_mean", "flux_std"])


def prosody(waves: Sequence[np.ndarray], rms: Sequence[np.ndarray], *, shifts: Sequence[int | None],
            sr: int, n_fft: int, hop_length: int) -> np.ndarray:
    """Pitch and loudness functionals of each waveform, shape ``(B, len(prosody_names()))`` float32.

    ``waves[i]``: mono float32 ``(n_i,)``; ``rms[i]``: its per-frame RMS ``(frames_i,)`` on the
    same hop; ``shifts[i]``: how many samples ``waves[i]`` is ``waves[0]`` moved by
    (zero-filled), or None. Voiced frames are those within 20 dB of the loudest frame (YIN
    reports a pitch everywhere); only their pitch is computed, unless fewer than 3 are voiced.
    """
    frame = max(n_fft, int(np.ceil(2 * sr / F0_MIN_HZ)))  # YIN needs two periods of the lowest f0
    yin = Yin(sr=sr, frame=frame, hop=hop_length, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ)
    # YIN frames a clip shorter than a frame as if zero-extended to one
    waves = [np.pad(y, (0, frame - y.shape[0])) if y.shape[0] < frame else y for y in waves]
    loudness, picks = [], []
    for y, r in zip(waves, rms):
        rms_db = 20.0 * np.log10(np.maximum(r[: yin.n_frames(y.shape[0])], 1e-8))
        voiced = rms_db > rms_db.max() - 20.0
        loudness.append((rms_db, voiced))
        picks.append(np.flatnonzero(voiced) if voiced.sum() >= 3 else np.arange(voiced.shape[0]))
    f0 = f0_at(waves, picks, shifts, yin)
    return np.stack([_prosody_functionals(np.log(f), *db) for f, db in zip(f0, loudness)])


def _prosody_functionals(lf: np.ndarray, rms_db: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """The functionals of one waveform's log-f0 ``lf`` (the frames it was taken on) and its
    per-frame loudness in dB: ``(len(prosody_names()),)`` float32."""
    pct = np.percentile(lf, _PCTS)
    delta = np.diff(lf).std() if lf.shape[0] > 2 else 0.0
    return np.concatenate([[lf.mean(), lf.std()], pct, [pct[-1] - pct[0], voiced.mean(), delta],
                           np.percentile(rms_db, (10, 50, 90))]).astype(np.float32)


def dynamics(mfcc: np.ndarray, mel_db: np.ndarray) -> np.ndarray:
    """Spectral-change functionals, shape ``(len(dynamics_names()),)``.

    ``mfcc``: ``(n_mfcc >= 20, frames)`` float32; ``mel_db``: ``(n_mels, frames)``.
    """
    m = mfcc[:N_DYN_MFCC]
    width = min(9, m.shape[1] if m.shape[1] % 2 else m.shape[1] - 1)
    if width < 3:
        d = d2 = np.zeros_like(m)
    else:
        d = delta(m, width=width, order=1)
        d2 = delta(m, width=width, order=2)
    flux = np.sqrt((np.diff(mel_db, axis=1) ** 2).mean(axis=0)) if mel_db.shape[1] > 1 else np.zeros(1)
    return np.concatenate([d.std(1), d2.std(1), np.abs(d).mean(1), [flux.mean(), flux.std()]]).astype(np.float32)


def delta(m: np.ndarray, *, width: int, order: int) -> np.ndarray:
    """``librosa.feature.delta(m, width=width, order=order)`` for float32 ``m`` ``(rows, frames)``,
    ``frames >= width``, to the bit: scipy's ``savgol_filter(mode="interp")``, whose interior is a
    convolution with fixed coefficients and whose ``width // 2`` frames at each end come from a
    polynomial fitted to the first (last) ``width`` frames, restated with its per-width set-up
    (the coefficients, the fit's scaled Vandermonde matrix) done once."""
    import scipy.ndimage

    fit = _savgol(width, order, m.shape[0])
    out = scipy.ndimage.convolve1d(m, fit.coeffs, axis=-1, mode="constant")
    half, n = width // 2, m.shape[1]
    for start, first in ((0, 0), (n - width, n - half)):
        out[:, first:first + half] = _edge(m[:, start:start + width], fit, first - start, half, order)
    return out


class _Savgol:
    """What a Savitzky-Golay derivative of one width and order needs, whatever the data."""

    def __init__(self, width: int, order: int, rows: int) -> None:
        import scipy.signal
        from scipy.linalg.lapack import get_lapack_funcs

        x = np.arange(0, width, dtype=np.float32)  # scipy's polyfit, in the data's float32
        lhs = x[:, None] ** np.flip(np.arange(order + 1, dtype=np.float32))[None, :]
        self.scale = np.sqrt(np.sum(lhs * lhs, axis=0))
        self.lhs = lhs / self.scale
        self.rcond = x.shape[0] * np.finfo(x.dtype).eps
        self.coeffs = scipy.signal.savgol_coeffs(width, order, deriv=order)
        # scipy.linalg.lstsq's own LAPACK call (gelsd) without its ~80 us of checks per call
        self.gelsd, gelsd_lwork = get_lapack_funcs(("gelsd", "gelsd_lwork"), (self.lhs,))
        work, iwork, info = gelsd_lwork(width, order + 1, rows, self.rcond)
        self.lwork, self.iwork = int(np.ceil(work)) + 1, int(iwork)


@lru_cache(maxsize=16)
def _savgol(width: int, order: int, rows: int) -> _Savgol:
    return _Savgol(width, order, rows)


def _edge(window: np.ndarray, fit: _Savgol, first: int, half: int, order: int) -> np.ndarray:
    """The ``order``-th derivative, at window frames ``first .. first + half``, of the degree
    ``order`` polynomial least-squares fitted to ``window`` ``(rows, width)``: ``(rows, half)``.
    scipy's ``_fit_edge`` (polyfit, polyder, polyval) in its own operations and dtypes."""
    x, _, _, info = fit.gelsd(fit.lhs, window.T, fit.lwork, fit.iwork, fit.rcond, False, False)
    if info != 0:
        raise np.linalg.LinAlgError(f"gelsd failed ({info})")
    c = (x[: order + 1].T / fit.scale).T
    n = c.shape[0]
    dp = c[:-order].copy()
    for k in range(order):
        dp *= np.arange(n - k - 1, order - k - 1, -1, dtype=c.dtype).reshape(n - order, 1)
    at = np.arange(first, first + half, dtype=dp.dtype).reshape(-1, 1)
    values = np.zeros_like(at)
    for j in range(dp.shape[0]):
        values = values * at + dp[j]
    return (values / (1.0 ** order)).T
