"""Synthetic emotional "speech": WAV corpora with real corpus file names.

The real CREMA-D audio cannot be had on this project's machines, so the demo, the tests and the
benchmarks run on audio made here. It is not speech, but it is built the way a source-filter
model of acted speech is, so that the usual descriptors (MFCC, chroma, mel, spectral contrast,
zero-crossing rate, RMS) carry emotion the way they do on real recordings:

* a voiced source: a band-limited sawtooth (PolyBLEP) following an f0 contour, with jitter
  (cycle-to-cycle f0 noise), shimmer (cycle-to-cycle amplitude noise), creak (alternating
  period amplitudes, i.e. a subharmonic) and breath noise gated by the glottal cycle;
* syllables: a speaking rate in syllables per second, a raised-sine amplitude envelope per
  syllable with random stress, occasional pauses, and short fricative-like noise bursts at
  syllable onsets;
* a vowel per syllable: formant tracks (F1-F4) interpolated between vowel targets and shaped by
  a spectral tilt (brightness), applied as a time-varying filter in the STFT domain;
* an intonation contour: a pitch target per syllable (its spread is the pitch range), a
  declination, and a slow tremor;
* a loudness per clip, a random recording gain, and a little background noise.

Each emotion draws every one of these parameters from its own distribution (see
:data:`EMOTION_STYLES`), and the distributions overlap, so the task is learnable but not
trivially separable; speaker f0 (male ~100-130 Hz, female ~180-220 Hz) and per-clip gain are
nuisance factors on top.

Randomness is explicit: :func:`synth_voice` takes a :class:`numpy.random.Generator`, and the
corpus writers seed each clip from ``(seed, file name)`` with
``np.random.default_rng([seed, zlib.crc32(name.encode())])``, so a file does not depend on
generation order or on which other files are written, and the same seed gives byte-identical
files.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.fft

from ser.errors import SerError

__all__ = [
    "EMOTIONS",
    "EMODB_LETTERS",
    "EMOTION_STYLES",
    "EmotionStyle",
    "synth_voice",
    "actor_f0",
    "make_cremad_corpus",
    "make_emodb_corpus",
    "make_cremad_full",
]

#: CREMA-D's six emotions, the ones :func:`make_cremad_corpus` writes by default.
EMOTIONS: tuple[str, ...] = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")

#: EmoDB's emotion letters and the project's codes for them.
EMODB_LETTERS: dict[str, str] = {
    "W": "ANG",
    "E": "DIS",
    "A": "FEA",
    "F": "HAP",
    "N": "NEU",
    "T": "SAD",
    "L": "BOR",
}

#: EmoDB's speakers and their sex (from the corpus documentation); others alternate.
_EMODB_SEX: dict[str, str] = {
    "03": "Male", "08": "Female", "09": "Female", "10": "Male", "11": "Male",
    "12": "Male", "13": "Female", "14": "Female", "15": "Male", "16": "Female",
}

#: CREMA-D intensity levels and how far they push a clip's style away from neutral.
_LEVEL_INTENSITY: dict[str, float] = {"LO": 0.6, "MD": 1.0, "HI": 1.4, "XX": 1.0}


@dataclass(frozen=True)
class EmotionStyle:
    """Mean acoustic parameters of one emotion; each clip draws around them.

    Attributes:
        pitch_st: mean f0 relative to the speaker's base f0, in semitones.
        range_st: standard deviation of the per-syllable pitch targets, in semitones.
        rate_sps: speaking rate, in syllables per second.
        loud_db: loudness relative to neutral speech, in dB.
        tilt_db_oct: spectral tilt above 300 Hz, in dB per octave, on top of the source's own
            -6 dB/octave (closer to 0 is brighter).
        jitter: cycle-to-cycle f0 perturbation, as a fraction of f0 (standard deviation).
        nhr_db: breath-noise-to-harmonic ratio, in dB (higher is breathier).
        creak: depth of the alternating-period amplitude modulation (0 none, 1 full).
        tremor_st: depth of a 4-7 Hz f0 tremor, in semitones.
        attack: exponent of the raised-sine syllable envelope (small is abrupt, large is soft).
        formant_shift: relative shift of all formants (smiling raises them, sadness lowers).
    """

    pitch_st: float
    range_st: float
    rate_sps: float
    loud_db: float
    tilt_db_oct: float
    jitter: float
    nhr_db: float
    creak: float
    tremor_st: float
    attack: float
    formant_shift: float


#: The per-emotion means. Rough guide followed: ANG high pitch, loud, bright, fast, abrupt;
#: HAP high pitch, wide range, fast; FEA highest pitch, jittery, breathy, fast, trembling;
#: SAD low, narrow, slow, quiet, dark, breathy; NEU mid and flat; DIS lowish, slow, creaky;
#: BOR (EmoDB's boredom) low, flat, slow, darkish.
EMOTION_STYLES: dict[str, EmotionStyle] = {
    "NEU": EmotionStyle(0.0, 1.2, 4.4, 0.0, -4.5, 0.005, -26.0, 0.03, 0.05, 1.0, 0.00),
    "ANG": EmotionStyle(3.0, 2.6, 5.4, 7.0, -0.5, 0.010, -26.0, 0.05, 0.05, 0.5, 0.05),
    "HAP": EmotionStyle(4.5, 4.0, 5.0, 3.0, -2.5, 0.006, -22.0, 0.03, 0.05, 0.8, 0.06),
    "FEA": EmotionStyle(6.0, 2.2, 5.8, 0.0, -3.5, 0.030, -12.0, 0.05, 0.50, 0.9, 0.02),
    "SAD": EmotionStyle(-2.5, 0.7, 2.9, -7.0, -9.0, 0.010, -15.0, 0.15, 0.20, 1.6, -0.05),
    "DIS": EmotionStyle(-1.5, 2.0, 3.4, -2.0, -6.0, 0.020, -19.0, 0.50, 0.10, 1.0, -0.02),
    "BOR": EmotionStyle(-1.5, 0.6, 3.3, -3.5, -7.0, 0.008, -21.0, 0.20, 0.05, 1.3, -0.03),
}

#: Per-clip spread of each parameter around the emotion's mean (standard deviations). The
#: spreads are what make neighbouring emotions overlap.
_SPREAD = EmotionStyle(
    pitch_st=1.0, range_st=0.35, rate_sps=0.4, loud_db=1.6, tilt_db_oct=1.2, jitter=0.0025,
    nhr_db=2.0, creak=0.05, tremor_st=0.05, attack=0.12, formant_shift=0.012,
)

#: Vowel formant targets (F1, F2, F3, F4) of an adult male voice, in Hz.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],  # a
        [270.0, 2290.0, 3010.0, 3700.0],  # i
        [300.0, 870.0, 2240.0, 3300.0],  # u
        [530.0, 1840.0, 2480.0, 3500.0],  # e
        [570.0, 840.0, 2410.0, 3300.0],  # o
        [660.0, 1720.0, 2410.0, 3500.0],  # ae
        [490.0, 1350.0, 1690.0, 3300.0],  # er
    ]
)
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])  # Hz, F1-F4

#: The speech level of a neutral clip, as RMS over its voiced part, in dBFS.
_BASE_LEVEL_DBFS = -25.0
_PEAK = 0.99
#: Size of a canonical 16-bit PCM WAV header (what libsndfile writes and CREMA-D has).
_WAV_HEADER_BYTES = 44


# --------------------------------------------------------------------------------------------
# the voice
# --------------------------------------------------------------------------------------------


def _draw_style(emotion: str, rng: np.random.Generator, intensity: float) -> EmotionStyle:
    """One clip's parameters: neutral + intensity * (emotion - neutral) + spread * N(0, 1)."""
    mean = EMOTION_STYLES[emotion]
    neu = EMOTION_STYLES["NEU"]
    z = rng.standard_normal(11)
    fields = list(EmotionStyle.__dataclass_fields__)
    vals = {
        f: getattr(neu, f) + intensity * (getattr(mean, f) - getattr(neu, f))
        + getattr(_SPREAD, f) * z[i]
        for i, f in enumerate(fields)
    }
    # Keep every parameter physically sensible.
    vals["range_st"] = max(vals["range_st"], 0.2)
    vals["rate_sps"] = float(np.clip(vals["rate_sps"], 1.5, 9.0))
    vals["tilt_db_oct"] = min(vals["tilt_db_oct"], 2.0)
    vals["jitter"] = float(np.clip(vals["jitter"], 0.001, 0.08))
    vals["creak"] = float(np.clip(vals["creak"], 0.0, 0.9))
    vals["tremor_st"] = max(vals["tremor_st"], 0.0)
    vals["attack"] = float(np.clip(vals["attack"], 0.3, 2.5))
    return EmotionStyle(**vals)


def _polyblep_saw(phase: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """A sawtooth in [-1, 1] from a running phase (in cycles), with PolyBLEP anti-aliasing.

    Args:
        phase: shape (n,), cumulative phase in cycles.
        dt: shape (n,), phase increment per sample (f0 / sr), in cycles.
    Returns:
        shape (n,), float32.
    """
    t = phase - np.floor(phase)
    saw = t.astype(np.float32)
    saw *= 2.0
    saw -= 1.0
    # Smooth the jump near each wrap with a 2-sample polynomial residual.
    lo = t < dt
    x = t[lo] / dt[lo]
    saw[lo] -= 2.0 * x - x * x - 1.0
    hi = t > 1.0 - dt
    x = (t[hi] - 1.0) / dt[hi]
    saw[hi] -= x * x + 2.0 * x + 1.0
    return saw


def _stft_filter(x: np.ndarray, gains: np.ndarray, n_fft: int) -> np.ndarray:
    """Filter ``x`` with a gain per (frame, frequency bin), by weighted overlap-add.

    Frames are ``n_fft`` long with a hop of ``n_fft // 2`` and a sqrt-Hann window on both
    sides (analysis x synthesis = Hann, which sums to 1 at half overlap).

    Args:
        x: shape (n,), float32, the signal.
        gains: shape (n_frames, n_fft // 2 + 1), float32 linear magnitude gains, where
            ``n_frames = ceil(n / hop) + 1`` (frame ``k`` is centred on sample ``k * hop``).
    Returns:
        shape (n,), float32, the filtered signal.
    """
    n = x.shape[0]
    hop = n_fft // 2
    n_frames = gains.shape[0]
    total = (n_frames + 1) * hop
    xp = np.zeros(total, dtype=np.float32)
    xp[hop : hop + n] = x
    win = np.sqrt(np.hanning(n_fft + 1)[:-1]).astype(np.float32)  # periodic sqrt-Hann
    slabs = xp.reshape(-1, hop)
    # Frame k = slabs k and k + 1: no strided copies needed at half overlap.
    frames = np.concatenate([slabs[:-1], slabs[1:]], axis=1)
    frames *= win
    # scipy.fft keeps float32 single precision (numpy's float32 path is much slower).
    spec = scipy.fft.rfft(frames, axis=1)
    spec *= gains
    out = scipy.fft.irfft(spec, n=n_fft, axis=1)
    out *= win
    y = np.zeros(total, dtype=np.float32)
    y[: n_frames * hop] += out[:, :hop].reshape(-1)
    y[hop:] += out[:, hop:].reshape(-1)
    return y[hop : hop + n]


def _check_voice_args(emotion: str, duration_s: float, sr: int, speaker_f0: float) -> None:
    """Raise SerError for an argument :func:`synth_voice` cannot honour (see its Raises)."""
    if emotion not in EMOTION_STYLES:
        raise SerError(
            f"cannot synthesise emotion {emotion!r}; known: {', '.join(EMOTION_STYLES)}"
        )
    if not np.isfinite(duration_s) or duration_s < 0:
        raise SerError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if sr < 4000:
        raise SerError(f"sr must be at least 4000 Hz, got {sr!r}")
    if not (30.0 <= speaker_f0 <= 600.0):
        raise SerError(f"speaker_f0 must be within 30-600 Hz, got {speaker_f0!r}")


@dataclass(frozen=True)
class _Syllables:
    """One clip's syllables: where they lie and how each is spoken.

    Attributes:
        t0, t1: start and end of the speech (after the lead, before the trail), in seconds.
        bounds: shape (n_syl + 1,), syllable boundaries from ``t0`` to ``t1``, in seconds.
        stress: shape (n_syl,), amplitude factor of each syllable (0 for a pause).
        creaky: shape (n_syl,), bool, whether the syllable carries the clip's creak.
        fricative: shape (n_syl,), bool, whether it opens with a noise burst.
        fric_len: shape (n_syl,), the burst's decay time constant, in seconds.
    """

    t0: float
    t1: float
    bounds: np.ndarray
    stress: np.ndarray
    creaky: np.ndarray
    fricative: np.ndarray
    fric_len: np.ndarray

    @property
    def n_syl(self) -> int:
        return self.stress.shape[0]

    @property
    def starts(self) -> np.ndarray:
        return self.bounds[:-1]

    @property
    def ends(self) -> np.ndarray:
        return self.bounds[1:]

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.starts + self.ends)


def _draw_syllables(
    emotion: str, st: EmotionStyle, dur: float, rng: np.random.Generator
) -> _Syllables:
    """Syllable timing at the style's rate (gamma-distributed lengths), stress and pauses.

    ``dur`` is the clip length in seconds; the lead and trail silences are 0.03-0.2 s each,
    at most a fifth of the clip.
    """
    lead = min(rng.uniform(0.03, 0.20), 0.2 * dur)
    trail = min(rng.uniform(0.03, 0.20), 0.2 * dur)
    t0, t1 = lead, dur - trail
    n_syl = max(1, int(round((t1 - t0) * st.rate_sps)))
    lengths = rng.gamma(8.0, 1.0, size=n_syl)
    bounds = t0 + (t1 - t0) * np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
    stress = rng.lognormal(0.0, 0.25, size=n_syl)
    pause_p = {"SAD": 0.12, "DIS": 0.10, "BOR": 0.10, "NEU": 0.05}.get(emotion, 0.03)
    pause = rng.random(n_syl) < pause_p
    # Never pause on the first or last syllable: the clip would start or end in silence.
    if n_syl > 2:
        pause[[0, -1]] = False
    else:
        pause[:] = False
    stress[pause] = 0.0
    creaky = rng.random(n_syl) < 0.5
    fricative = rng.random(n_syl) < 0.5
    fric_len = rng.uniform(0.008, 0.02, size=n_syl)  # decay time constant, s
    return _Syllables(t0, t1, bounds, stress, creaky, fricative, fric_len)


@dataclass(frozen=True)
class _Controls:
    """Slow controls on a 1 ms grid, interpolated to samples where they are used.

    Attributes:
        tg: shape (m,), the grid, in seconds from the clip's start.
        env: shape (m,), the syllable amplitude envelope (raised sine ** attack, times stress).
        burst: shape (m,), the fricative bursts' envelope (exponential decay from onsets).
        creak: shape (m,), creak depth (0-1): the style's creak on creaky syllables.
    """

    tg: np.ndarray
    env: np.ndarray
    burst: np.ndarray
    creak: np.ndarray


def _syllable_controls(syl: _Syllables, st: EmotionStyle, dur: float) -> _Controls:
    """The envelope, burst and creak tracks of ``syl`` over a clip of ``dur`` seconds."""
    # A 1 ms grid is 16x cheaper than samples at 16 kHz, and a 1 ms linear ramp is below what
    # any frame-based feature can see.
    tg = np.arange(int(np.ceil(dur / 0.001)) + 1) * 0.001
    idx = np.clip(np.searchsorted(syl.bounds, tg, side="right") - 1, 0, syl.n_syl - 1)
    inside = (tg >= syl.t0) & (tg < syl.t1)
    starts, ends, stress = syl.starts, syl.ends, syl.stress
    u = np.clip((tg - starts[idx]) / (ends[idx] - starts[idx]), 0.0, 1.0)
    env_g = np.where(inside, np.sin(np.pi * u) ** st.attack * stress[idx], 0.0)
    since = tg - starts[idx]
    burst_g = np.where(
        inside & syl.fricative[idx] & (stress[idx] > 0) & (since < 3 * syl.fric_len[idx]),
        np.exp(-since / syl.fric_len[idx]),
        0.0,
    )
    creak_g = st.creak * syl.creaky[idx]
    return _Controls(tg, env_g, burst_g, creak_g)


def _f0_track(
    syl: _Syllables, st: EmotionStyle, speaker_f0: float, t: np.ndarray, sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The f0 of every sample, in Hz, shape ``t.shape``: intonation, tremor and jitter.

    Per-syllable pitch targets (spread ``st.range_st`` semitones) plus a declination are
    smoothed at a 5 ms control rate, a 4-7 Hz tremor is added, and each glottal period gets a
    random jitter factor; the result is clipped to 40 Hz .. 0.45 * sr.
    """
    n = t.shape[0]
    dur = n / sr
    t0, t1, centers = syl.t0, syl.t1, syl.centers
    ctl_dt = 0.005
    tc = np.arange(0.0, dur + ctl_dt, ctl_dt)
    targets = st.range_st * rng.standard_normal(syl.n_syl)
    decl = rng.uniform(1.0, 3.0)  # semitones of declination over the utterance
    targets += decl * (0.5 - (centers - t0) / max(t1 - t0, 1e-9))
    contour = np.interp(tc, centers, targets)
    k = max(1, int(round(0.06 / ctl_dt)))
    contour = np.convolve(np.pad(contour, (k, k), mode="edge"), np.ones(k) / k, mode="same")[k:-k]
    trem_hz = rng.uniform(4.0, 7.0)
    contour += st.tremor_st * np.sin(2 * np.pi * trem_hz * tc + rng.uniform(0, 2 * np.pi))
    # Exponentiate at the control rate, then interpolate: the contour is smooth there.
    f0_c = speaker_f0 * 2.0 ** ((st.pitch_st + contour) / 12.0)
    f0 = np.interp(t, tc, f0_c)
    # Jitter: one random factor per (approximate) glottal period, held over the period.
    period = max(1, int(round(sr / float(np.mean(f0_c)))))
    jitter = 1.0 + st.jitter * rng.standard_normal(-(-n // period))
    f0 *= np.repeat(jitter, period)[:n]
    np.clip(f0, 40.0, 0.45 * sr, out=f0)
    return f0


def _glottal_source(
    f0: np.ndarray, t: np.ndarray, ctl: _Controls, sr: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The voiced source: a PolyBLEP saw following ``f0`` with shimmer and creak.

    Args:
        f0: shape (n,), Hz. t: shape (n,), sample times in seconds.
    Returns:
        (saw, voiced): shape (n,) float32 each, the bare sawtooth (the breath gate reads it)
        and the saw with per-cycle shimmer and alternating-period creak applied.
    """
    f32 = np.float32
    dt = f0 / sr
    phase = np.cumsum(dt)  # float64: float32 would drift over a clip
    phase += rng.random()
    saw = _polyblep_saw(phase, dt)
    cycle = phase.astype(np.int64)  # phase > 0, so truncation is floor
    cycle -= cycle[0]
    shimmer = np.exp(0.08 * rng.standard_normal(int(cycle[-1]) + 1)).astype(f32)
    creak = np.interp(t, ctl.tg, ctl.creak).astype(f32)
    creak *= (cycle & 1).astype(f32)
    voiced = shimmer[cycle]
    voiced *= 1.0 - creak
    voiced *= saw
    return saw, voiced


def _excitation(
    saw: np.ndarray, voiced: np.ndarray, noise: np.ndarray, env: np.ndarray, nhr_db: float
) -> np.ndarray:
    """Voiced source plus cycle-gated breath noise, under the syllable envelope.

    All arrays shape (n,), float32; ``noise`` is unit white noise (left unchanged), ``nhr_db``
    the breath-to-harmonic ratio. ``voiced`` is overwritten and returned.
    """
    # Breath noise is strongest in the open phase: a triangular gate over each cycle.
    breath = np.abs(saw)
    breath *= 0.8
    breath += 0.2
    breath *= noise
    breath *= np.float32(np.sqrt(1.0 / 3.0) * 10 ** (nhr_db / 20.0))
    excitation = voiced
    excitation += breath
    excitation *= env
    return excitation


def _vowel_formants(
    syl: _Syllables, st: EmotionStyle, speaker_f0: float, text: str | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Formant targets of each syllable's vowel, shape (n_syl, 4), in Hz (F1-F4).

    The vowel sequence comes from ``text`` when given (same sentence, same vowels), else from
    ``rng``; formants scale with the speaker's vocal-tract length, the style's shift and a
    small per-clip articulation factor.
    """
    if text is None:
        vowels = rng.integers(0, len(_VOWELS), size=syl.n_syl)
    else:
        seq = np.random.default_rng(zlib.crc32(text.encode())).integers(0, len(_VOWELS), 64)
        vowels = seq[np.arange(syl.n_syl) % 64]
    vt_scale = (speaker_f0 / 115.0) ** 0.3 * (1.0 + st.formant_shift)
    vt_scale *= np.exp(0.03 * rng.standard_normal(4))  # this clip's articulation
    return _VOWELS[vowels] * vt_scale


def _formant_gains(
    tf: np.ndarray, centers: np.ndarray, targets_f: np.ndarray, freqs: np.ndarray,
    tilt_db_oct: float,
) -> np.ndarray:
    """The vocal-tract filter's magnitude per (frame, bin), shape (len(tf), len(freqs)), float32.

    Args:
        tf: frame centre times, s. centers: syllable centre times, s, shape (n_syl,).
        targets_f: (n_syl, 4) formant targets, Hz, interpolated between syllable centres.
        freqs: (bins,) float32 bin frequencies, Hz. tilt_db_oct: spectral tilt above 300 Hz.
    """
    f32 = np.float32
    # Cascade of second-order resonators: unit gain at DC, a peak of F/B at each formant.
    # |H_i|^2 = 1 / ((1 - (f/F_i)^2)^2 + (B_i f / F_i^2)^2); one sqrt for the whole cascade.
    den = np.ones((tf.shape[0], freqs.shape[0]), dtype=f32)
    for i in range(4):
        inv = (1.0 / np.interp(tf, centers, targets_f[:, i])).astype(f32)[:, None]
        ratio = freqs * inv  # (frames, bins)
        b = ratio * (f32(_BANDWIDTHS[i]) * inv)
        b *= b
        ratio *= ratio
        np.subtract(1.0, ratio, out=ratio)
        ratio *= ratio
        ratio += b
        den *= ratio
    tilt = 10.0 ** (tilt_db_oct / 20.0 * np.log2(np.maximum(freqs, 300.0) / 300.0))
    highpass = 1.0 / (1.0 + (80.0 / np.maximum(freqs, 1.0)) ** 4)
    gains = np.sqrt(den)
    np.divide((tilt * highpass).astype(f32), gains, out=gains)
    return gains


def _vocal_tract(
    excitation: np.ndarray, syl: _Syllables, st: EmotionStyle, speaker_f0: float,
    text: str | None, sr: int, rng: np.random.Generator,
) -> np.ndarray:
    """Filter the excitation (shape (n,), float32) through moving formants and the tilt.

    The filter is applied in the STFT domain, ~32 ms frames at half overlap; returns the
    speech, shape (n,), float32.
    """
    n = excitation.shape[0]
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = n_fft // 2
    n_frames = -(-n // hop) + 1
    tf = np.arange(n_frames) * hop / sr
    targets_f = _vowel_formants(syl, st, speaker_f0, text, rng)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr).astype(np.float32)
    gains = _formant_gains(tf, syl.centers, targets_f, freqs, st.tilt_db_oct)
    return _stft_filter(excitation, gains, n_fft)


def _fricative_bursts(noise: np.ndarray, t: np.ndarray, ctl: _Controls) -> np.ndarray:
    """Fricative-like bursts at syllable onsets: differenced noise (a high-pass), shape (n,).

    ``noise`` is the breath's noise row, reused (left unchanged): bursts sit at syllable
    onsets, where breath is gated off. Unit level; :func:`_mix_levels` scales it.
    """
    fric = np.empty(t.shape[0], dtype=np.float32)
    fric[0] = noise[0]
    np.subtract(noise[1:], noise[:-1], out=fric[1:])
    fric *= np.interp(t, ctl.tg, ctl.burst).astype(np.float32)
    return fric


def _mix_levels(
    speech: np.ndarray, fric: np.ndarray, bg: np.ndarray, env: np.ndarray, st: EmotionStyle,
    rng: np.random.Generator,
) -> np.ndarray:
    """Set the levels and sum: speech at the style's loudness, bursts, background noise.

    Args:
        speech, fric, env: shape (n,), float32 (``speech`` and ``fric`` are scaled in place).
        bg: shape (n,), float32 unit white noise, overwritten with the background noise.
    Returns:
        shape (n,), float32: the mix (``speech``'s buffer), before the limiter.
    """
    f32 = np.float32
    # The voiced-part RMS sits at the emotion's loudness, plus a random recording gain.
    active = env > 0.3 * max(float(env.max()), 1e-12)
    voiced_part = speech[active].astype(np.float64)
    rms = float(np.sqrt(np.mean(voiced_part**2))) if voiced_part.size else 0.0
    level_db = _BASE_LEVEL_DBFS + st.loud_db + rng.normal(0.0, 2.0)
    y = speech
    y *= f32(10 ** (level_db / 20.0) / rms if rms > 0 else 0.0)
    fric *= f32(10 ** ((level_db + rng.uniform(-20.0, -12.0)) / 20.0))
    y += fric
    # Background noise, gently darker than white (a two-tap average).
    bg[1:] += bg[:-1]
    bg *= f32(0.5 * 10 ** (rng.uniform(-62.0, -50.0) / 20.0))
    y += bg
    return y


def _limit(y: np.ndarray) -> np.ndarray:
    """Scale ``y`` (in place) so that its peak stays under :data:`_PEAK`; returns it."""
    peak = float(np.max(np.abs(y)))
    if peak > _PEAK:
        # A limiter, in effect: loud anger gets scaled down (a hair under 0.99, so float32
        # rounding cannot push it over).
        y *= np.float32(0.999 * _PEAK / peak)
    return y


def synth_voice(
    emotion: str,
    *,
    duration_s: float,
    sr: int,
    rng: np.random.Generator,
    speaker_f0: float = 140.0,
    intensity: float = 1.0,
    text: str | None = None,
) -> np.ndarray:
    """Synthesise one clip of emotional "speech".

    Args:
        emotion: a project code from :data:`EMOTION_STYLES` (``"ANG"``, ..., ``"BOR"``).
        duration_s: length, in seconds (0 gives an empty array).
        sr: sample rate, in Hz.
        rng: the only source of randomness.
        speaker_f0: the speaker's base f0, in Hz (30-600); it also sets the vocal-tract
            length: formants scale as ``(speaker_f0 / 115) ** 0.3``, higher voices higher.
        intensity: how far the clip's style is pushed from neutral (CREMA-D's LO/MD/HI are
            0.6/1.0/1.4); the per-clip spread is the same at every intensity.
        text: if given, the syllables' vowel sequence is derived from it, so one sentence
            has the same vowels for every speaker and emotion; otherwise drawn from ``rng``.

    Returns:
        float32 mono waveform, shape ``(round(duration_s * sr),)``, finite, peak <= 0.99.

    Raises:
        SerError: an unknown emotion, a negative duration, a sample rate below 4 kHz, or a
            speaker f0 outside 30-600 Hz.
    """
    _check_voice_args(emotion, duration_s, sr, speaker_f0)
    n = int(round(duration_s * sr))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    # The steps draw from rng in this order; changing it changes every synthetic corpus.
    st = _draw_style(emotion, rng, intensity)
    dur = n / sr
    # Sample-rate arrays are float32 (half the memory traffic); the phase stays float64.
    t = np.arange(n, dtype=np.float64) / sr
    syl = _draw_syllables(emotion, st, dur, rng)
    ctl = _syllable_controls(syl, st, dur)
    f0 = _f0_track(syl, st, speaker_f0, t, sr, rng)
    saw, voiced = _glottal_source(f0, t, ctl, sr, rng)
    noise = rng.standard_normal((2, n), dtype=np.float32)  # row 0: breath and bursts; 1: room
    env = np.interp(t, ctl.tg, ctl.env).astype(np.float32)
    excitation = _excitation(saw, voiced, noise[0], env, st.nhr_db)
    speech = _vocal_tract(excitation, syl, st, speaker_f0, text, sr, rng)
    fric = _fricative_bursts(noise[0], t, ctl)
    y = _mix_levels(speech, fric, noise[1], env, st, rng)
    return _limit(y)


# --------------------------------------------------------------------------------------------
# corpora
# --------------------------------------------------------------------------------------------


def _clip_rng(seed: int, name: str) -> np.random.Generator:
    """The generator for one file: depends on the seed and the file name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _write_pcm16(path: Path, y: np.ndarray, sr: int) -> None:
    """Write float audio in [-1, 1] as a mono 16-bit PCM WAV with the canonical 44-byte header.

    The bytes are the same as ``soundfile.write(path, pcm, sr, subtype="PCM_16")`` writes, but
    assembled here and written in one call: several times faster for small files, which
    matters when writing thousands of them.
    """
    pcm = np.round(np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2")
    data = pcm.tobytes()
    header = b"".join(
        [
            b"RIFF", struct.pack("<I", _WAV_HEADER_BYTES - 8 + len(data)), b"WAVE",
            b"fmt ", struct.pack("<IHHIIHH", 16, 1, 1, sr, 2 * sr, 2, 16),
            b"data", struct.pack("<I", len(data)),
        ]
    )
    path.write_bytes(header + data)


def actor_f0(index: int, *, seed: int) -> tuple[str, float]:
    """A synthetic speaker's sex and base f0: even indices male, odd female.

    Args:
        index: the speaker's 0-based position (CREMA-D actor ``1001`` is index 0).
        seed: the corpus seed.
    Returns:
        ``("Male", f0)`` with f0 in 100-130 Hz, or ``("Female", f0)`` with f0 in 180-220 Hz.
    """
    rng = np.random.default_rng([seed, 7_777, index])
    if index % 2 == 0:
        return "Male", float(rng.uniform(100.0, 130.0))
    return "Female", float(rng.uniform(180.0, 220.0))


def _check_emotions(emotions: Sequence[str]) -> None:
    bad = [e for e in emotions if e not in EMOTION_STYLES]
    if bad:
        raise SerError(f"unknown emotion code(s) {bad}; known: {', '.join(EMOTION_STYLES)}")


def _check_duration_range(duration_s: tuple[float, float]) -> None:
    lo, hi = duration_s
    if not (0 <= lo <= hi):
        raise SerError(f"duration_s must be (low, high) with 0 <= low <= high, got {duration_s!r}")


def make_cremad_corpus(
    root: str | Path,
    *,
    n_actors: int = 6,
    sentences: Sequence[str] = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL"),
    emotions: Sequence[str] = EMOTIONS,
    sr: int = 16000,
    duration_s: tuple[float, float] = (1.2, 2.0),
    seed: int = 42,
    demographics: bool = True,
) -> pd.DataFrame:
    """Write a small CREMA-D-shaped corpus of synthetic clips.

    Writes ``root/AudioWAV/<actor>_<sentence>_<emotion>_XX.wav`` (16-bit PCM) for every actor
    ``1001 .. 1000 + n_actors``, sentence and emotion, each clip's length drawn uniformly from
    ``duration_s``. Actors alternate male (f0 100-130 Hz) and female (180-220 Hz), starting
    with a male 1001 as in the real corpus. If ``demographics``, also writes
    ``root/VideoDemographics.csv`` (``"ActorID","Age","Sex","Race","Ethnicity"``, quoted like
    the real file) for those actors, with sexes matching their voices.

    Returns:
        one row per file written: ``file`` (name), ``actor`` (int), ``sentence``, ``emotion``,
        ``duration_s`` (samples / sr, in seconds).
    """
    if n_actors < 1:
        raise SerError(f"n_actors must be >= 1, got {n_actors!r}")
    _check_emotions(emotions)
    _check_duration_range(duration_s)
    root = Path(root)
    wav_dir = root / "AudioWAV"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    people = []
    for i in range(n_actors):
        actor = 1001 + i
        sex, f0 = actor_f0(i, seed=seed)
        people.append((actor, sex))
        for sentence in sentences:
            for emotion in emotions:
                name = f"{actor}_{sentence}_{emotion}_XX.wav"
                rng = _clip_rng(seed, name)
                dur = rng.uniform(*duration_s)
                y = synth_voice(emotion, duration_s=dur, sr=sr, rng=rng, speaker_f0=f0,
                                text=sentence)
                _write_pcm16(wav_dir / name, y, sr)
                rows.append((name, actor, sentence, emotion, len(y) / sr))
    if demographics:
        _write_demographics(root / "VideoDemographics.csv", people, seed=seed)
    return pd.DataFrame(rows, columns=["file", "actor", "sentence", "emotion", "duration_s"])


def _write_demographics(path: Path, people: list[tuple[int, str]], *, seed: int) -> None:
    """Write a VideoDemographics.csv in the real file's format (strings quoted, numbers not)."""
    import csv

    rng = np.random.default_rng([seed, 4_242])
    races = np.array(["Caucasian", "African American", "Asian", "Unknown"])
    race_p = np.array([0.67, 0.24, 0.08, 0.01])
    frame = pd.DataFrame(
        {
            "ActorID": [a for a, _ in people],
            "Age": rng.integers(20, 75, size=len(people)),
            "Sex": [s for _, s in people],
            "Race": rng.choice(races, size=len(people), p=race_p),
            "Ethnicity": np.where(rng.random(len(people)) < 0.1, "Hispanic", "Not Hispanic"),
        }
    )
    frame.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")


def make_emodb_corpus(
    root: str | Path,
    *,
    speakers: Sequence[str] = ("03", "08", "09", "10"),
    texts: Sequence[str] = ("a01", "a02", "a04", "a05"),
    emotions: str = "WEAFNT",
    sr: int = 16000,
    duration_s: tuple[float, float] = (1.0, 1.6),
    seed: int = 42,
) -> pd.DataFrame:
    """Write a small EmoDB-shaped corpus of synthetic clips.

    Writes ``root/<speaker><text><letter>a.wav`` (e.g. ``03a01Wa.wav``, 16-bit PCM) for every
    speaker, text and EmoDB emotion letter (``W`` anger, ``E`` disgust, ``A`` fear, ``F`` happy,
    ``N`` neutral, ``T`` sad, ``L`` boredom). Speakers use EmoDB's real sexes where known
    (03, 10 male; 08, 09 female), otherwise they alternate.

    Returns:
        one row per file: ``file``, ``speaker``, ``text``, ``letter``, ``emotion`` (project code),
        ``duration_s``.
    """
    bad = [c for c in emotions if c not in EMODB_LETTERS]
    if bad:
        raise SerError(f"unknown EmoDB emotion letter(s) {bad}; known: {''.join(EMODB_LETTERS)}")
    _check_duration_range(duration_s)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, speaker in enumerate(speakers):
        sex, f0 = actor_f0(i, seed=seed)
        if speaker in _EMODB_SEX and _EMODB_SEX[speaker] != sex:
            sex, f0 = actor_f0(i + 1, seed=seed)  # the other sex, still seeded
        for text in texts:
            for letter in emotions:
                name = f"{speaker}{text}{letter}a.wav"
                rng = _clip_rng(seed, name)
                dur = rng.uniform(*duration_s)
                emotion = EMODB_LETTERS[letter]
                y = synth_voice(emotion, duration_s=dur, sr=sr, rng=rng, speaker_f0=f0, text=text)
                _write_pcm16(root / name, y, sr)
                rows.append((name, speaker, text, letter, emotion, len(y) / sr))
    return pd.DataFrame(
        rows, columns=["file", "speaker", "text", "letter", "emotion", "duration_s"]
    )


def _parse_cremad_name(name: str) -> tuple[int, str, str, str]:
    """``1001_DFA_ANG_XX.wav`` -> ``(1001, "DFA", "ANG", "XX")``."""
    parts = Path(name).stem.split("_")
    if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in EMOTION_STYLES:
        raise SerError(f"not a CREMA-D file name (ACTOR_SENTENCE_EMOTION_LEVEL.wav): {name!r}")
    return int(parts[0]), parts[1], parts[2], parts[3]


def _write_full_chunk(
    wav_dir: Path, items: list[tuple[str, float]], sr: int, seed: int
) -> list[tuple[str, int, str, str, str, float]]:
    """Write one batch of CREMA-D clips (a joblib task); returns their table rows."""
    rows = []
    for name, dur in items:
        actor, sentence, emotion, level = _parse_cremad_name(name)
        _, f0 = actor_f0(actor - 1001, seed=seed)
        rng = _clip_rng(seed, name)
        y = synth_voice(emotion, duration_s=dur, sr=sr, rng=rng, speaker_f0=f0,
                        intensity=_LEVEL_INTENSITY.get(level, 1.0), text=sentence)
        _write_pcm16(wav_dir / name, y, sr)
        rows.append((name, actor, sentence, emotion, level, len(y) / sr))
    return rows


def _stratified_head(frame: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """``limit`` rows, as equal per emotion as possible, seeded; returned in the CSV's order."""
    rng = np.random.default_rng([seed, 1_234])
    order = rng.permutation(len(frame))
    shuffled = frame.iloc[order]
    rank = shuffled.groupby("emotion").cumcount()
    pick = shuffled.assign(_rank=rank.to_numpy()).sort_values(["_rank", "emotion"], kind="stable")
    return frame.loc[np.sort(pick.index[:limit])]


def _read_clip_list(clips_csv: str | Path, *, limit: int | None, seed: int) -> pd.DataFrame:
    """A CREMA-D clip list (``file, [wav_bytes,] duration_s``) plus an ``emotion`` column.

    With ``limit``, only a seeded, emotion-stratified sample of that many rows, in the list's
    order. Raises SerError naming the list: a missing column, a missing or negative duration,
    a file name that is not CREMA-D's, or a negative limit.
    """
    clips = pd.read_csv(clips_csv)
    missing = {"file", "duration_s"} - set(clips.columns)
    if missing:
        raise SerError(f"{clips_csv}: missing column(s) {sorted(missing)}")
    if clips["duration_s"].isna().any() or (clips["duration_s"] < 0).any():
        raise SerError(f"{clips_csv}: duration_s must be present and >= 0 on every row")
    clips = clips.assign(emotion=[_parse_cremad_name(f)[2] for f in clips["file"]])
    if limit is not None:
        if limit < 0:
            raise SerError(f"limit must be >= 0, got {limit!r}")
        clips = _stratified_head(clips, limit, seed)
    return clips


def _clip_durations(clips: pd.DataFrame, sr: int) -> np.ndarray:
    """Each clip's length, in seconds, shape (len(clips),): exact sample counts where known."""
    durations = clips["duration_s"].to_numpy(dtype=float)
    if sr == 16000 and "wav_bytes" in clips.columns:
        # The real list's durations are rounded to 0.1 ms; its byte counts (a 44-byte header
        # plus 2 bytes a sample) give CREMA-D's exact sample counts. Use them where they agree.
        exact = (clips["wav_bytes"].to_numpy(dtype=float) - _WAV_HEADER_BYTES) / 2.0
        agree = (exact >= 0) & (exact == np.round(exact)) & (np.abs(exact - durations * sr) <= 1.0)
        durations = np.where(agree, exact / sr, durations)
    return durations


def _write_full_parallel(
    wav_dir: Path, items: list[tuple[str, float]], sr: int, seed: int, n_jobs: int
) -> list[tuple[str, int, str, str, str, float]]:
    """:func:`_write_full_chunk` over joblib worker processes; rows in ``items``' order."""
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(n_jobs)
    # A few chunks per worker: low per-task overhead, still balanced at the tail.
    n_chunks = min(len(items), 8 * workers)
    chunks = [items[i::n_chunks] for i in range(n_chunks)]
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_write_full_chunk)(wav_dir, c, sr, seed) for c in chunks
    )
    rows = [r for part in parts for r in part]
    position = {name: i for i, (name, _) in enumerate(items)}
    rows.sort(key=lambda r: position[r[0]])
    return rows


def make_cremad_full(
    root: str | Path,
    *,
    clips_csv: str | Path,
    sr: int = 16000,
    seed: int = 42,
    limit: int | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Write a synthetic clip for every file named in a CREMA-D clip list.

    Each row of ``clips_csv`` (columns ``file, wav_bytes, duration_s``; the real list has
    7,442 rows) becomes ``root/AudioWAV/<file>``, 16-bit PCM, with ``round(duration_s * sr)``
    samples (a 0-second row becomes a valid, empty WAV; at 16 kHz, where ``wav_bytes`` agrees
    with ``duration_s`` to a sample, the exact count ``(wav_bytes - 44) / 2`` is used, so the
    files have the real corpus's byte sizes), its emotion and intensity level
    (LO/MD/HI push the style 0.6/1.0/1.4 of the way from neutral) taken from the name, and
    the actor's voice from :func:`actor_f0`.

    Args:
        limit: if given, write only ``limit`` rows: a seeded, emotion-stratified sample
            (as equal a count per emotion as the list allows, drawn with ``seed``), kept in the
            list's order. ``None`` writes every row.
        n_jobs: worker processes (joblib, local processes) when > 1; files are identical
            whatever the value, since each clip is seeded from ``(seed, file name)``.

    Returns:
        one row per file, in the list's order: ``file``, ``actor``, ``sentence``, ``emotion``,
        ``level``, ``duration_s`` (samples / sr, in seconds).
    """
    clips = _read_clip_list(clips_csv, limit=limit, seed=seed)
    durations = _clip_durations(clips, sr)
    wav_dir = Path(root) / "AudioWAV"
    wav_dir.mkdir(parents=True, exist_ok=True)
    items = list(zip(clips["file"], durations.tolist()))
    if n_jobs == 1 or len(items) < 2:
        rows = _write_full_chunk(wav_dir, items, sr, seed)
    else:
        rows = _write_full_parallel(wav_dir, items, sr, seed, n_jobs)
    return pd.DataFrame(
        rows, columns=["file", "actor", "sentence", "emotion", "level", "duration_s"]
    )
