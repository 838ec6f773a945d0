"""The recommended descriptor recipe's cost against the default features', per clip.

The recipe is ``FeatureConfig(stats=("mean", "std"), extras=("prosody", "dynamics"))``: frame
means and stds plus pitch/loudness and spectral-change functionals. On real CREMA-D clips
(decoded as featurize decodes them: 16 kHz, at most 4 s), each clip's five variants (original,
noise, stretch, shift, pitch; seed 42) are built once, then :func:`extract_variants` is timed on
them with the default config and with the recipe, alternately, clip by clip, in one process and
one thread (as a featurize worker runs), so the machine's drift hits both alike. Each clip is
timed ``--repeats`` times per config and its fastest time kept; the figures are the medians over
clips. Decoding and augmenting (the same for both) are timed apart, once per clip, and the
ratio is also given for featurize's whole per-clip work: decode, augment, extract.

    flock /tmp/ser-bench.lock python benchmarks/recipe_cost.py [--clips 80] [--data DIR]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # a featurize worker's one thread; set before numpy loads

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path("/work/shared/data/cremad/AudioWAV")
AUGMENT = ("noise", "stretch", "shift", "pitch")


def load_clips(data: Path, n: int) -> tuple[list[list], list[float]]:
    """The variants of ``n`` clips spread over ``data``'s sorted ``*.flac`` / ``*.wav`` files,
    and the seconds each clip's decoding and augmenting took."""
    from ser.audio.augment import variants
    from ser.audio.decode import load_audio

    paths = sorted(data.glob("*.flac")) or sorted(data.glob("*.wav"))
    if not paths:
        raise SystemExit(f"{data}: no .flac or .wav files")
    step = max(1, len(paths) // n)
    clips, seconds = [], []
    for path in paths[::step][:n]:
        t0 = time.perf_counter()
        y, _ = load_audio(str(path), sr=16000, max_seconds=4.0, min_samples=256)
        clips.append(variants(y, sr=16000, clip_id=path.stem, augment=AUGMENT, seed=42))
        seconds.append(time.perf_counter() - t0)
    return clips, seconds


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=80, help="clips to time (default 80)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"folder of audio files (default {DATA})")
    parser.add_argument("--repeats", type=int, default=3, help="timings per clip and config; the fastest is kept")
    args = parser.parse_args()

    from ser.features.config import FeatureConfig

    from ser.features.extractor import extract_variants

    configs = {"default": FeatureConfig(),
               "recipe": FeatureConfig(stats=("mean", "std"), extras=("prosody", "dynamics"))}
    load_clips(args.data, 2)  # warm-up: decoder and resampler
    clips, prep_times = load_clips(args.data, args.clips)
    for cfg in configs.values():  # warm-up: imports, compiled kernels, cached filterbanks
        extract_variants(clips[0], cfg)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for clip in clips:
        for name, cfg in configs.items():
            times[name].append(best_time(lambda: extract_variants(clip, cfg), args.repeats))
    default, recipe = (statistics.median(times[name]) for name in ("default", "recipe"))
    prep = statistics.median(prep_times)
    ratios = [r / d for d, r in zip(times["default"], times["recipe"])]
    print(f"{len(clips)} clips x {len(clips[0])} variants, median of per-clip best of {args.repeats}")
    print(f"default: {1e3 * default:.2f} ms/clip")
    print(f"recipe:  {1e3 * recipe:.2f} ms/clip")
    print(f"ratio:   {recipe / default:.2f}x (median of per-clip ratios {statistics.median(ratios):.2f}x)")
    print(f"decode + augment: {1e3 * prep:.2f} ms/clip; with it, recipe / default "
          f"{(prep + recipe) / (prep + default):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
