"""The batched extractor: a clip's variants at once, both feature families from one STFT each.

Two families come out of one decode and one STFT per waveform:

- **descriptors**: a fixed-length vector of frame statistics (mean, optionally std) of
  zero-crossing rate, RMS energy, spectral centroid/bandwidth/rolloff/flatness, MFCCs,
  chroma, log-mel band energies and spectral contrast, with librosa's definitions, shape ``(D,)``,
  and optionally clip-level functionals (:mod:`ser.features.prosody`);
- **mel**: mel power in dB (torchaudio's filterbank and dB conversion), shape
  ``(n_mels, frames)`` with ``frames`` fixed by ``max_seconds``: shorter clips are padded
  with the clip's dB floor, longer ones cut; the true frame count is returned beside it.

Every spectral feature reads the same STFT, so a clip costs one transform, not ten. The
maths is restated here in numpy (tests/features/test_features.py and tests/featurize/test_fast_path.py
pin it to librosa and torchaudio) for speed, and so that a worker process needs neither torch nor
librosa for the default features (each costs seconds of import and hundreds of MB per process;
numba, for the compiled loops of :mod:`ser.features.kernels`, costs ~0.5 s to import and load
and ~110 MiB):

- a clip's variants are laid end to end in one buffer and transformed together, in blocks of
  :data:`_BLOCK` frames, so the number of numpy calls per clip is small and fixed;
- a time-shifted variant's frames that repeat the original's are computed once: the caller
  says which variant is shifted, and by how much (:class:`ser.audio.augment.Variant`);
- the mel filterbanks are sparse (two non-zeros per bin), chroma and the spectral moments are
  small dense products; rolloff and spectral contrast are compiled loops over the bins, each
  vectorised across the block's frames (:mod:`ser.features.kernels`);
- zero-crossing rate and RMS come from cumulative sums over the waveform, not framed copies.

The config and the descriptor names are in :mod:`ser.features.config`, the filterbanks in
:mod:`ser.features.filterbanks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ser.features.config import FeatureConfig, frame_feature_names, n_descriptors
from ser.features.filterbanks import Bases, bases

__all__ = ["extract", "extract_many", "extract_variants", "stft", "power_to_db"]

#: Frames per STFT block: enough to amortise the ~40 numpy calls a block takes (64 frames
#: cost 30% more per clip; 256 to a whole clip the same), few enough to bound the working
#: memory (~1 MB of spectrum per 256 frames).
_BLOCK = 256
_ROLL_PERCENT = 0.85
_AMIN = 1e-10
_DB_PER_LOG = 10.0 / np.log(10.0)  # 10 log10(x) = _DB_PER_LOG ln(x); ln is several times faster


# -- the STFT ----------------------------------------------------------------------------------


def _padded(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """``y`` reflect-padded by ``n_fft // 2`` on each side (a centred STFT) and its frame count.

    A clip no longer than half a frame cannot be reflected: it is zero-extended first.
    """
    x = np.ascontiguousarray(y, dtype=np.float32)
    half = cfg.n_fft // 2
    if x.shape[0] <= half:
        x = np.pad(x, (0, half + 1 - x.shape[0]))
    return np.pad(x, half, mode="reflect"), 1 + x.shape[0] // cfg.hop_length


def stft(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Complex STFT, shape ``(1 + n_fft // 2, 1 + n // hop)``: centred, reflect-padded, Hann.

    The transform every spectral feature reads (the same framing as torchaudio's
    ``MelSpectrogram`` and ``torch.stft(center=True, pad_mode="reflect")``).
    """
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    padded, _ = _padded(y, cfg)
    frames = sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]
    return scipy.fft.rfft(frames.T * bases(cfg).window, axis=0)


def power_to_db(power: np.ndarray, *, top_db: float | None) -> np.ndarray:
    """``10 log10(power)`` with a floor of 1e-10 and, if ``top_db``, ``top_db`` below the peak.

    Same convention as torchaudio's ``AmplitudeToDB(stype="power")`` and librosa's
    ``power_to_db(ref=1.0)``.
    """
    db = _db(power)
    if top_db is not None:
        np.maximum(db, db.max() - np.float32(top_db), out=db)
    return db


def _db(power: np.ndarray) -> np.ndarray:
    """``10 log10(max(power, 1e-10))`` as float32 (ln is several times faster than log10)."""
    db = np.log(np.maximum(power, _AMIN, dtype=np.float32))
    db *= np.float32(_DB_PER_LOG)
    return db


# -- a batch of waveforms, laid end to end -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Batch:
    """Several waveforms in one buffer, each in a slot that starts on a hop boundary.

    Every STFT frame of every waveform is then a row of one strided view, so a clip's
    variants are transformed together, in blocks, with a fixed number of numpy calls per block
    rather than per waveform. Frames are numbered compactly: waveform ``i`` owns frames
    ``bounds[i]:bounds[i + 1]``.
    """

    waves: list             # the float32 waveforms, cut to max_seconds
    offsets: np.ndarray     # (B,) first sample of each slot
    n_frames: np.ndarray    # (B,) STFT frames of each waveform
    bounds: np.ndarray      # (B + 1,) frame boundaries
    size: int               # samples in the buffer


def _batch(waves: Sequence[np.ndarray], cfg: FeatureConfig) -> _Batch:
    half, hop = cfg.n_fft // 2, cfg.hop_length
    ys = [np.ascontiguousarray(np.asarray(w)[: cfg.max_samples], dtype=np.float32) for w in waves]
    # a clip no longer than half a frame cannot be reflected: its STFT sees it zero-extended
    extended = [max(y.shape[0], half + 1) for y in ys]
    slots = [-(-(n + 2 * half) // hop) * hop for n in extended]
    offsets = np.concatenate([[0], np.cumsum(slots)[:-1]]).astype(np.int64)
    n_frames = np.array([1 + n // hop for n in extended], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(n_frames)]).astype(np.int64)
    return _Batch(ys, offsets, n_frames, bounds, int(sum(slots)))


def _frame_rows(batch: _Batch, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """The reflect-padded buffer as a strided ``(rows, n_fft)`` view, and each frame's row."""
    from numpy.lib.stride_tricks import sliding_window_view

    half, hop = cfg.n_fft // 2, cfg.hop_length
    buf = np.zeros(batch.size, dtype=np.float32)
    for y, off in zip(batch.waves, batch.offsets):
        n = y.shape[0]
        x = buf[off + half: off + half + max(n, half + 1)]  # zero-extended if too short to reflect
        x[:n] = y
        buf[off: off + half] = x[half:0:-1]  # numpy's and torch's "reflect": the edge sample once
        buf[off + half + x.shape[0]: off + 2 * half + x.shape[0]] = x[-2: -half - 2: -1]
    rows = np.concatenate([off // hop + np.arange(n) for off, n in zip(batch.offsets, batch.n_frames)])
    return sliding_window_view(buf, cfg.n_fft)[::hop], rows


def _frame_sums(buf: np.ndarray, starts: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """``sum(buf[s : s + n_fft])`` for each frame start ``s`` (multiples of hop), float64.

    From sums over hop-sized blocks when a frame is a whole number of hops (no serial pass over
    every sample), else from a cumulative sum.
    """
    n_fft, hop = cfg.n_fft, cfg.hop_length
    if n_fft % hop == 0:
        blocks = buf.reshape(-1, hop).sum(axis=1, dtype=np.uint32 if buf.dtype == np.uint8 else None)
        cum = np.zeros(blocks.shape[0] + 1, dtype=np.float64)
        np.cumsum(blocks, out=cum[1:])
        first = starts // hop
        return cum[first + n_fft // hop] - cum[first]
    cum = np.zeros(buf.shape[0] + 1, dtype=np.float64)
    np.cumsum(buf, dtype=np.float64, out=cum[1:])
    return cum[starts + n_fft] - cum[starts]


def _time_domain(batch: _Batch, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Zero-crossing rate and RMS per STFT frame of every waveform, each ``(total frames,)``.

    librosa's definitions, frames of ``n_fft`` samples centred like the STFT's:
    ``feature.zero_crossing_rate`` (edge padding; |x| <= 1e-10 counts as zero and zero as
    positive; the crossings between the frame's own samples, over n_fft) and ``feature.rms``
    (zero padding): RMS is the signal's, not the windowed STFT's. They come from frame sums of
    per-sample crossings and squares laid out like the STFT's buffer, not from framed copies.
    A waveform zero-extended for the STFT has fewer frames of its own: its last value repeats.
    """
    n_fft, hop, half = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
    size = batch.size + n_fft + hop  # room for the last frame's edge pair, whole blocks
    size += -size % hop
    crossing = np.zeros(size, dtype=np.uint8)  # [j]: samples j and j+1 differ in sign
    square = np.zeros(size, dtype=np.float32)
    starts, take = [], []
    first = 0
    for y, off, n in zip(batch.waves, batch.offsets, batch.n_frames):
        at = off + half  # the waveform's first sample; the edge padding around it never crosses
        negative = y < np.float32(-1e-10)
        np.not_equal(negative[1:], negative[:-1], out=crossing[at: at + y.shape[0] - 1].view(bool))
        np.square(y, out=square[at: at + y.shape[0]])
        own = 1 + y.shape[0] // hop
        starts.append(off + hop * np.arange(own))
        take.append(first + np.minimum(np.arange(n), own - 1))
        first += own
    starts = np.concatenate(starts)
    # a frame's pairs end one sample before the frame does: drop the pair across its edge
    zcr = (_frame_sums(crossing, starts, cfg) - crossing[starts + n_fft - 1]) / n_fft
    rms = np.sqrt(np.maximum(_frame_sums(square, starts, cfg), 0.0) / n_fft)
    take = np.concatenate(take)
    return zcr[take], rms[take]


# -- per-frame features ------------------------------------------------------------------------


def _repeated_frames(batch: _Batch, shifts: Sequence[int | None], cfg: FeatureConfig) -> np.ndarray | None:
    """For each frame of the batch, an equal frame to compute instead (itself if none), or None.

    ``shifts[j]``: how many samples waveform ``j`` is the first one moved by, zero-filled
    (:func:`ser.audio.augment.time_shift`), or None. Where that is a whole number of hops, frame
    ``t`` of ``y[i] = y0[i - k]`` reads the samples frame ``t - k / hop`` of ``y0`` reads,
    wherever neither frame reaches past the samples the two share (the STFT's padding differs
    there), and a frame inside the zero fill is all zeros: those frames are computed once.
    An unshifted copy, an all-zero one and one sharing less than two frames' worth of samples
    are computed in full (what the sample scan this replaces did, so results are unchanged).
    """
    waves, bounds = batch.waves, batch.bounds
    if len(waves) < 2 or waves[0].shape[0] <= cfg.n_fft // 2:
        return None
    source = None
    for j in range(1, len(waves)):
        span = _shared_span(waves[j], waves[0], shifts[j], cfg)
        if span is None:
            continue
        if source is None:
            source = np.arange(int(bounds[-1]))
        _reuse(source, span, int(shifts[j]), waves[j].shape[0], int(bounds[j]), int(bounds[0]),
               int(batch.n_frames[j]), cfg)
    return source


def _shared_span(y: np.ndarray, y0: np.ndarray, k: int | None, cfg: FeatureConfig) -> tuple[int, int] | None:
    """``(lo, hi)``: the samples of ``y``, ``y0`` moved by ``k``, that hold ``y0``'s; None if
    its frames are not worth sharing (no whole-hop shift, too short, all zeros)."""
    if k is None or k == 0 or k % cfg.hop_length or y.shape[0] <= cfg.n_fft // 2:
        return None
    lo, hi = max(0, k), min(y.shape[0], y0.shape[0] + k)
    if hi - lo < 2 * cfg.n_fft or not y[lo:hi].any():
        return None
    return lo, hi


def _reuse(source: np.ndarray, span: tuple[int, int], k: int, n: int, first: int, first0: int,
           n_frames: int, cfg: FeatureConfig) -> None:
    """Point the shifted waveform's frames (``first .. first + n_frames`` of the batch) at the
    original's (from ``first0``) where they read the same samples, and its all-zero frames at
    its first one, in place."""
    hop, half = cfg.hop_length, cfg.n_fft // 2
    lo, hi = span
    t = np.arange(n_frames)
    centre = t * hop
    inside = (centre - half >= lo) & (centre + half <= hi)
    source[first + t[inside]] = first0 + t[inside] - k // hop
    # y is zero outside [lo, hi): frames wholly inside that fill, their reflected padding
    # included, are all zeros, and every one equals the first
    if k > 0:
        zero = centre + half < lo
    else:
        zero = (centre - half >= hi) & (2 * (n - 1) - (centre + half - 1) >= hi)
    if zero.any():
        z = first + t[zero]
        source[z] = z[0]


def _spectral_frames(frames: np.ndarray, rows: np.ndarray, cfg: FeatureConfig, b: Bases) -> dict[str, np.ndarray]:
    """Everything per frame that reads the STFT, for the frames ``frames[rows]``, block by block.

    Returns ``(..., frames)`` arrays: ``mel_power`` (both mel banks), ``chroma``
    (unnormalised), ``moments`` (sums of m, f m, f^2 m over bins, f in kHz), ``log_mean`` and
    ``mean`` (of the power floored at 1e-10, for flatness), ``rolloff`` (bin), ``peak`` and
    ``valley`` (contrast bands).
    """
    import scipy.fft

    from ser.features.kernels import contrast_peaks_valleys, flatness_terms, rolloff_bins

    total = rows.shape[0]
    n_bins = 1 + cfg.n_fft // 2
    n_bands = cfg.n_contrast_bands + 1
    out = {
        "mel_power": np.empty((b.mels.shape[0], total), dtype=np.float32),
        "chroma": np.empty((b.chroma.shape[0], total), dtype=np.float32),
        "moments": np.empty((3, total), dtype=np.float32),
        "log_mean": np.empty(total, dtype=np.float32),
        "rolloff": np.empty(total, dtype=np.int64),
        "peak": np.empty((n_bands, total), dtype=np.float32),
        "valley": np.empty((n_bands, total), dtype=np.float32),
    }
    out["mean"] = np.empty(total, dtype=np.float32)
    quads = 4 * (n_bins // 4)
    floor = np.float32(np.sqrt(_AMIN))  # |S| >= 1e-5 where |S|^2 >= 1e-10
    n_blocks = -(-total // _BLOCK)
    size = -(-total // n_blocks)  # equal blocks: no short tail
    window = b.window[:, 0]
    quad_buffer = np.empty((quads // 4, size), dtype=np.float32)
    for a in range(0, total, size):
        z = slice(a, min(a + size, total))
        block = frames[rows[z]]  # (frames, n_fft), a copy
        block *= window
        spec = scipy.fft.rfft(block.T, axis=0)  # (bins, frames)
        mag = np.abs(spec)  # one pass; re^2 + im^2 then a square root would be three
        power = np.square(mag)
        out["mel_power"][:, z] = b.mels @ power
        np.matmul(b.chroma, power, out=out["chroma"][:, z])
        rolloff_bins(mag, _ROLL_PERCENT, out["moments"][0, z], out["rolloff"][z])  # and the magnitude's sum
        np.matmul(b.moments, mag, out=out["moments"][1:, z])
        contrast_peaks_valleys(mag, b.band_first, b.band_end, b.band_k, out["peak"][:, z], out["valley"][:, z])
        # flatness: geometric over arithmetic mean of |S|^2 floored at 1e-10 (librosa's amin).
        # The arithmetic one is the floored power's sum (flatness_terms, with the products); the
        # geometric one is 2 mean(log max(|S|, 1e-5)), taken as the log of products of four
        # magnitudes (a quarter of the logs): |S| <= 512 max|y| keeps them inside float32.
        q = quad_buffer[:, :z.stop - z.start]
        flatness_terms(mag, floor, q, out["mean"][z])
        np.add.reduce(np.log(q, out=q), axis=0, out=out["log_mean"][z])
        for rest in range(quads, n_bins):
            out["log_mean"][z] += np.log(np.maximum(mag[rest], floor))
    out["mean"] /= n_bins
    out["log_mean"] *= 2.0 / n_bins
    return out


def _clamp_segments(db: np.ndarray, bounds: np.ndarray, top_db: float | None) -> np.ndarray:
    """``db`` (..., frames) floored at ``top_db`` below each waveform's own peak, in place."""
    if top_db is not None:
        peaks = np.maximum.reduceat(db.reshape(-1, db.shape[-1]).max(axis=0), bounds[:-1])
        np.maximum(db, np.repeat(peaks - np.float32(top_db), np.diff(bounds)), out=db)
    return db


# -- a batch of waveforms in, features out ----------------------------------------------------


def extract_many(waves: Sequence[np.ndarray], cfg: FeatureConfig, *,
                 shifts: Sequence[int | None] | None = None) -> dict[str, Any]:
    """Both feature families of several waveforms (a clip's variants) at once.

    ``waves``: mono float ``(n_i,)`` arrays at ``cfg.sample_rate``; samples past
    ``max_seconds`` are ignored. ``shifts``: one per waveform, how many samples it is
    ``waves[0]`` moved by (zero-filled), or None where it is no shifted copy; the frames such
    a copy shares with the original are computed once where the shift is a whole number of
    ``cfg.hop_length`` hops. ``shifts=None`` (the default): no frames are reused, every
    waveform is computed in full. Each row equals :func:`extract` of that waveform alone (to
    float rounding: matrix products over blocks of other widths round differently). Returns
    ``{"descriptors": (B, D), "mel": (B, n_mels, cfg.n_frames), "n_frames": (B,) int}``.
    """
    shifts = [None] * len(waves) if shifts is None else list(shifts)
    if len(shifts) != len(waves):
        raise ValueError(f"{len(shifts)} shifts for {len(waves)} waveforms")
    b = bases(cfg)
    batch = _batch(waves, cfg)
    per_frame, mel2d = _per_frame(batch, _spectral(batch, shifts, cfg, b), cfg, b)
    n_frames = np.minimum(batch.n_frames, cfg.n_frames)
    return {"descriptors": _descriptors(batch, per_frame, shifts, cfg),
            "mel": _fixed_mels(mel2d, batch.bounds, n_frames, cfg), "n_frames": n_frames}


def extract_variants(variants: Sequence[Any], cfg: FeatureConfig) -> dict[str, Any]:
    """:func:`extract_many` of a clip's variants (:func:`ser.audio.augment.variants`: each has
    a ``wave`` and a ``shift``), the shifted copy's repeated frames computed once."""
    return extract_many([v.wave for v in variants], cfg, shifts=[v.shift for v in variants])


def extract(y: np.ndarray, cfg: FeatureConfig) -> dict[str, Any]:
    """Both feature families from one STFT of one waveform.

    ``y``: mono float ``(n,)`` at ``cfg.sample_rate``; samples past ``max_seconds`` are ignored.
    Returns ``{"descriptors": (D,), "mel": (n_mels, cfg.n_frames), "n_frames": int}``.
    """
    out = extract_many([y], cfg)
    return {"descriptors": out["descriptors"][0], "mel": out["mel"][0], "n_frames": int(out["n_frames"][0])}


def _spectral(batch: _Batch, shifts: Sequence[int | None], cfg: FeatureConfig, b: Bases) -> dict[str, np.ndarray]:
    """:func:`_spectral_frames` of every frame of the batch, each distinct frame computed once."""
    frames, rows = _frame_rows(batch, cfg)
    source = _repeated_frames(batch, shifts, cfg)
    if source is None:
        return _spectral_frames(frames, rows, cfg, b)
    own = source == np.arange(source.shape[0])  # a frame repeats an earlier one, or itself
    column = (np.cumsum(own) - 1)[source]  # then the results are laid out frame by frame
    return {key: value[..., column] for key, value in _spectral_frames(frames, rows[own], cfg, b).items()}


def _per_frame(batch: _Batch, s: dict[str, np.ndarray], cfg: FeatureConfig, b: Bases) -> tuple[np.ndarray, np.ndarray]:
    """Every per-frame feature (rows in :func:`ser.features.config.frame_feature_names` order)
    and the 2D mel spectrogram in dB, each ``(rows, total frames)`` float32."""
    bounds, n_desc = batch.bounds, cfg.n_desc_mels
    per_frame = np.empty((len(frame_feature_names(cfg)), int(bounds[-1])), dtype=np.float32)
    per_frame[0], per_frame[1] = _time_domain(batch, cfg)
    m0, m1, m2 = (s["moments"][i].astype(np.float64) for i in range(3))
    weight = np.maximum(m0, _AMIN)
    centroid = m1 / weight
    # sum_k p_k (f_k - c)^2 with p = m / weight, expanded: the p sum to m0 / weight (1 unless silent)
    bandwidth = np.sqrt(np.maximum(m2 / weight - centroid ** 2 * (2.0 - m0 / weight), 0.0))
    per_frame[2] = 1000.0 * centroid
    per_frame[3] = 1000.0 * bandwidth
    per_frame[4] = b.freqs[s["rolloff"]]
    per_frame[5] = np.exp(s["log_mean"]) / s["mean"]
    i = 6
    db = _db(s["mel_power"])
    mel_db = _clamp_segments(db[:n_desc], bounds, cfg.top_db)  # (n_desc_mels, frames)
    np.matmul(b.dct, mel_db, out=per_frame[i: i + cfg.n_mfcc])
    i += cfg.n_mfcc
    chroma = s["chroma"]
    np.divide(chroma, np.maximum(np.abs(chroma).max(axis=0), _AMIN), out=per_frame[i: i + cfg.n_chroma])
    i += cfg.n_chroma
    per_frame[i: i + n_desc] = mel_db
    i += n_desc
    np.subtract(_clamp_segments(_db(s["peak"]), bounds, cfg.top_db),
                _clamp_segments(_db(s["valley"]), bounds, cfg.top_db), out=per_frame[i:])
    return per_frame, _clamp_segments(db[n_desc:], bounds, cfg.top_db)


def _descriptors(batch: _Batch, per_frame: np.ndarray, shifts: Sequence[int | None],
                 cfg: FeatureConfig) -> np.ndarray:
    """Each waveform's descriptor vector ``(B, D)`` float32: frame statistics, then the extras."""
    bounds, width = batch.bounds, per_frame.shape[0]
    out = np.empty((len(batch.waves), n_descriptors(cfg)), dtype=np.float32)
    for k in range(len(batch.waves)):
        frames = per_frame[:, bounds[k]:bounds[k + 1]]
        for j, stat in enumerate(cfg.stats):
            out[k, j * width:(j + 1) * width] = frames.mean(axis=1) if stat == "mean" else frames.std(axis=1)
    col = len(cfg.stats) * width
    if "prosody" in cfg.extras:
        from ser.features.prosody import prosody

        rms = [per_frame[1, bounds[k]:bounds[k + 1]] for k in range(len(batch.waves))]
        p = prosody(batch.waves, rms, shifts=shifts, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        out[:, col:col + p.shape[1]] = p
        col += p.shape[1]
    if "dynamics" in cfg.extras:
        from ser.features.prosody import dynamics

        mfcc, mel = 6, 6 + cfg.n_mfcc + cfg.n_chroma  # first rows of the MFCCs and the mel bands
        for k in range(len(batch.waves)):
            lo, hi = bounds[k], bounds[k + 1]
            d = dynamics(per_frame[mfcc:mfcc + cfg.n_mfcc, lo:hi], per_frame[mel:mel + cfg.n_desc_mels, lo:hi])
            out[k, col:col + d.shape[0]] = d
    if "compare" in cfg.extras:  # the last group
        from ser.features.compare import compare

        c = compare(batch.waves, cfg.sample_rate)
        out[:, out.shape[1] - c.shape[1]:] = c
    return out


def _fixed_mels(mel2d: np.ndarray, bounds: np.ndarray, n_frames: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Each waveform's mel spectrogram cut or padded to ``cfg.n_frames``: ``(B, n_mels, n_frames)``,
    padded with the waveform's own floor, not 0 dB."""
    mel = np.empty((len(n_frames), cfg.n_mels, cfg.n_frames), dtype=np.float32)
    for k in range(len(n_frames)):
        own = mel2d[:, bounds[k]:bounds[k + 1]]
        mel[k, :, : n_frames[k]] = own[:, : n_frames[k]]
        mel[k, :, n_frames[k]:] = own.min()
    return mel
