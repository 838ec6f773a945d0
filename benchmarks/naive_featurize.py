"""The anchor for ``featurize_speed.py``: featurize the way a notebook does.

One clip at a time: ``librosa.load``, four augmented copies (white noise, librosa's
``effects.time_stretch`` and ``effects.pitch_shift``, a shifted copy), and for each of the five
variants every descriptor by its own librosa call on the waveform (each recomputing its own
STFT; frame means), plus torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB``.

It computes the same quantities as :mod:`ser.features.extractor` with the same settings (FeatureConfig's
n_fft, hop, mel bands, max_seconds; reflect-padded centred STFTs; chroma at tuning 0), so its
outputs can be compared with the project's (``tests/test_fast_path.py`` does, on unaugmented
clips). Only the way of computing differs. A notebook calling ``chroma_stft`` with its
defaults would also estimate the tuning of every variant (``--tuning estimate``: slower, and
chroma then differs a little). The augmentations draw from their own generator, not ser's, so
augmented rows are not expected to be equal.

    python benchmarks/naive_featurize.py AUDIO_DIR [--limit N] [--tuning estimate]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Notebook defaults: FeatureConfig()'s values written out.
SR = 16000
N_FFT = 1024
HOP = 256
MAX_SECONDS = 4.0
N_MELS = 64          # the 2D mel spectrogram
N_DESC_MELS = 128    # the mel bands averaged into the descriptor vector
N_MFCC = 40
TOP_DB = 80.0
N_BANDS = 6          # spectral contrast
N_FRAMES = 1 + int(round(MAX_SECONDS * SR)) // HOP


def naive_descriptors(y: np.ndarray, sr: int = SR, *, tuning: float | None = 0.0) -> np.ndarray:
    """Frame means of every descriptor, each by its own librosa call (own STFT), in
    ``ser.features.config.descriptor_names`` order (stats=("mean",)). ``tuning=None``: chroma
    estimates the tuning, as ``chroma_stft`` does by default."""
    import librosa

    stft_kw = dict(n_fft=N_FFT, hop_length=HOP, pad_mode="reflect")
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP).mean(axis=1)
    rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP).mean(axis=1)
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr, **stft_kw).mean(axis=1)
    bandwidth = librosa.feature.spectral_bandwidth(y=y, sr=sr, **stft_kw).mean(axis=1)
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr, **stft_kw).mean(axis=1)
    flatness = librosa.feature.spectral_flatness(y=y, **stft_kw).mean(axis=1)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC, n_mels=N_DESC_MELS, **stft_kw).mean(axis=1)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr, tuning=tuning, **stft_kw).mean(axis=1)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=N_DESC_MELS, **stft_kw)
    mel_db = librosa.power_to_db(mel, ref=1.0, top_db=TOP_DB).mean(axis=1)
    contrast = librosa.feature.spectral_contrast(y=y, sr=sr, n_bands=N_BANDS, **stft_kw).mean(axis=1)
    return np.concatenate([zcr, rms, centroid, bandwidth, rolloff, flatness, mfcc, chroma, mel_db,
                           contrast]).astype(np.float32)


_TORCH_TRANSFORMS: dict = {}


def naive_mel_db(y: np.ndarray, sr: int = SR) -> tuple[np.ndarray, int]:
    """torchaudio MelSpectrogram + AmplitudeToDB, padded with its floor (or cut) to N_FRAMES."""
    import torch
    import torchaudio

    if not _TORCH_TRANSFORMS:  # built once, as a notebook cell would
        _TORCH_TRANSFORMS["mel"] = torchaudio.transforms.MelSpectrogram(
            sample_rate=sr, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
        _TORCH_TRANSFORMS["db"] = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB)
    db = _TORCH_TRANSFORMS["db"](_TORCH_TRANSFORMS["mel"](torch.from_numpy(y))).numpy()
    n = min(db.shape[1], N_FRAMES)
    out = np.full((N_MELS, N_FRAMES), db.min(), dtype=np.float32)
    out[:, :n] = db[:, :n]
    return out, n


def naive_variants(y: np.ndarray, sr: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """The original and four augmented copies, librosa's effects for stretch and pitch."""
    import librosa

    snr = rng.uniform(15.0, 30.0)
    noise_rms = np.sqrt(np.mean(y ** 2)) / 10 ** (snr / 20)
    noisy = (y + noise_rms * rng.standard_normal(len(y))).astype(np.float32)
    stretched = librosa.effects.time_stretch(y, rate=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))))
    shifted = np.roll(y, int(rng.integers(-int(0.3 * sr), int(0.3 * sr) + 1)))
    pitched = librosa.effects.pitch_shift(y, sr=sr, n_steps=float(rng.uniform(-2.0, 2.0)))
    return [("none", y), ("noise", noisy), ("stretch", stretched), ("shift", shifted), ("pitch", pitched)]


def naive_clip(path: str | Path, rng: np.random.Generator, *,
               tuning: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One clip, five variants: ``(descriptors (5, D), mel (5, N_MELS, N_FRAMES))``."""
    import librosa

    y, sr = librosa.load(path, sr=SR, duration=MAX_SECONDS)
    descs, mels = [], []
    for _, wave in naive_variants(y, sr, rng):
        wave = wave[: int(round(MAX_SECONDS * SR))]
        descs.append(naive_descriptors(wave, sr, tuning=tuning))
        mels.append(naive_mel_db(wave, sr)[0])
    return np.stack(descs), np.stack(mels)


def run(paths: list[Path], seed: int = 42, *, tuning: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Every clip in turn, results kept in memory as a notebook would (a list, then a stack)."""
    rng = np.random.default_rng(seed)
    descs, mels = [], []
    for p in paths:
        d, m = naive_clip(p, rng, tuning=tuning)
        descs.append(d)
        mels.append(m)
    return np.concatenate(descs), np.concatenate(mels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--tuning", choices=["zero", "estimate"], default="zero",
                        help="chroma at tuning 0 (ser's definition) or estimated per variant (librosa's default)")
    args = parser.parse_args(argv)
    paths = sorted(args.audio_dir.glob("*.wav"))[: args.limit]
    t0 = time.perf_counter()
    descs, _ = run(paths, tuning=0.0 if args.tuning == "zero" else None)
    dt = time.perf_counter() - t0
    print(f"naive: {len(paths)} clips, {descs.shape[0]} rows in {dt:.1f} s: {len(paths) / dt:.2f} clips/s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
