"""Prediction speed: files per second of ``predict_paths`` on 3 s clips, with 1 and 2 workers.

Generates a synthetic CREMA-D-shaped corpus of ``--files`` clips of ``--seconds`` (16 kHz mono,
16-bit PCM; :func:`ser.corpus.synth.make_cremad_corpus`) in a temporary folder, featurizes it
(no augmentation) and trains a descriptor model (``--model``, logreg by default) on it, then
times :func:`ser.evaluation.predict.predict_paths` over the whole folder:

- for each worker count, a *cold* call (the first with that count: the loky pool starts, its
  workers import the feature path) and the median of ``--repeat`` *warm* calls (the pool is
  reused, as in one long run), each forced to use the workers (``min_files_per_worker=1``);
- the default ``predict_paths`` (its :func:`~ser.evaluation.predict.pool_workers` rule decides);
- what ``ser predict FOLDER --out p.csv`` does, end to end in a fresh process (torch import,
  checkpoint load, reading, writing the CSV), with 1 worker;
- what one clip's ``extract`` costs (both families: mel is computed too) against the decode.

The goal is 50 files/s of 3 s clips on 2 CPU cores. Timed runs share the machine with other
work: check ``uptime`` before trusting them, and run under ``flock /tmp/ser-bench.lock``:

    flock /tmp/ser-bench.lock python benchmarks/predict_speed.py [--files 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_corpus(root: Path, n_files: int, seconds: float) -> Path:
    """``n_files`` clips (rounded up to whole actors: 2 sentences x 6 emotions each) of ``seconds``."""
    from ser.corpus.synth import make_cremad_corpus

    actors = max(1, -(-n_files // 12))
    make_cremad_corpus(root, n_actors=actors, sentences=("DFA", "IEO"), duration_s=(seconds, seconds), seed=3)
    return root / "AudioWAV"


def make_checkpoint(audio: Path, work: Path, model: str) -> Path:
    """Featurize ``audio`` (default features, no augmentation) and train ``model`` on it."""
    from ser.featurize.job import FeaturizeConfig, featurize
    from ser.training.loop import TrainConfig, train

    quiet = dict(log=lambda m: None)
    cfg = FeaturizeConfig(data=audio, out=work / "feats.h5", augment=(), workers=2)
    featurize(cfg, progress=False, **quiet)
    train(cfg.out, TrainConfig(model=model), work / "run", device="cpu", **quiet)
    return work / "run" / "best.pt"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_predict(ckpt: Path, audio: Path, n_files: int, workers: int, repeat: int) -> dict[str, float]:
    """Files/s of a cold call and the median of ``repeat`` warm ones with ``workers`` forced."""
    from ser.evaluation.predict import predict_paths

    def run() -> None:
        frame = predict_paths(ckpt, [audio], workers=workers, min_files_per_worker=1)
        assert len(frame) == n_files and (frame["error"] == "").all()

    cold = _timed(run)
    warm = statistics.median(_timed(run) for _ in range(repeat))
    return {"workers": workers, "cold_files_per_s": n_files / cold, "warm_files_per_s": n_files / warm}


def time_fresh_process(ckpt: Path, audio: Path, n_files: int, work: Path) -> float:
    """Files/s of what ``ser predict FOLDER --out p.csv`` does, in a fresh process: torch import,
    checkpoint load, reading, writing the CSV (1 worker, the command's default)."""
    code = ("import sys; from ser.evaluation.predict import predict_paths, write_predictions; "
            "write_predictions(predict_paths(sys.argv[1], [sys.argv[2]]), sys.argv[3])")
    cmd = [sys.executable, "-c", code, str(ckpt), str(audio), str(work / "p.csv")]
    t = _timed(lambda: subprocess.run(cmd, check=True, capture_output=True))
    return n_files / t


def time_extract(audio: Path, n: int = 100) -> dict[str, float]:
    """Milliseconds per clip: decode alone, and ``extract`` (descriptors and mel) of the decoded clip."""
    from ser.audio.decode import load_audio
    from ser.features.config import FeatureConfig
    from ser.features.extractor import extract
    from ser.featurize.worker import limit_threads

    restore = limit_threads()
    cfg = FeatureConfig()
    files = sorted(audio.glob("*.wav"))[:n]
    waves = []
    decode = _timed(lambda: waves.extend(load_audio(f, sr=cfg.sample_rate, max_seconds=cfg.max_seconds)[0]
                                         for f in files))
    extract(waves[0], cfg)
    feats = _timed(lambda: [extract(y, cfg) for y in waves])
    restore()
    return {"decode_ms": 1e3 * decode / len(files), "extract_ms": 1e3 * feats / len(files)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--model", default="logreg")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="ser-predict-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        audio = make_corpus(work / "corpus", args.files, args.seconds)
        n = len(list(audio.glob("*.wav")))
        ckpt = make_checkpoint(audio, work, args.model)
        print(f"{n} clips of {args.seconds:g} s and a {args.model} checkpoint in {time.perf_counter() - t0:.1f} s")
        results = {"files": n, "seconds": args.seconds, "model": args.model, "extract": time_extract(audio)}
        print(f"per clip: decode {results['extract']['decode_ms']:.2f} ms, "
              f"extract (descriptors + mel) {results['extract']['extract_ms']:.2f} ms")
        results["pool"] = [time_predict(ckpt, audio, n, w, args.repeat) for w in (1, 2)]
        for r in results["pool"]:
            print(f"predict_paths, {r['workers']} worker(s): {r['cold_files_per_s']:.0f} files/s cold, "
                  f"{r['warm_files_per_s']:.0f} files/s warm")
        from ser.evaluation.predict import pool_workers

        results["fresh_process_files_per_s"] = time_fresh_process(ckpt, audio, n, work)
        print(f"a fresh process, as `ser predict FOLDER --out p.csv` (1 worker; pool_workers(2, {n}) = "
              f"{pool_workers(2, n)}): {results['fresh_process_files_per_s']:.0f} files/s end to end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
