"""Whole-command scaling of ``featurize``: 2 workers against 1 on real audio, and the parent's cost.

    flock /tmp/ser-bench.lock python benchmarks/featurize_scaling.py [--clips 1200] [--small 150] [--rounds 3]

On the first ``--clips`` real CREMA-D clips of ``../shared/data/cremad/AudioWAV`` (sorted by
name; every clip in train, so each gets five variants), and on the first ``--small`` of them,
it runs the whole command, ``python -m ser featurize --test-size 0 --val-size 0``, each in a
process of its own, with ``--workers 1`` and ``--workers 2`` in turn (the order turned each
round), and prints:

- the wall time of each command (interpreter start, imports, scan, the pool's start, the work,
  the merge), and the ratio 1 worker / 2 workers, the median of each round's own ratio (this
  VM's speed drifts by ~5 % from minute to minute);
- the parent process's own CPU time per clip (``getrusage(RUSAGE_SELF)`` around the command's
  call, so the workers are excluded; commits and the merge included, imports not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
AUDIO = HERE.parents[2] / "shared" / "data" / "cremad" / "AudioWAV"


def child(data: str, out: str, workers: str) -> None:
    """The measured command, run as ``ser featurize`` would be, reporting its own rusage."""
    import resource

    from ser.cli import main

    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        main(["featurize", "--data", data, "--out", out, "--workers", workers, "--test-size", "0", "--val-size",
              "0", "--no-progress", "--overwrite"], standalone_mode=False)
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(json.dumps({"parent_cpu_s": cpu}), file=sys.stderr)


def corpus(n: int, root: Path) -> Path:
    """A folder of links to the first ``n`` real clips."""
    folder = root / f"clips{n}"
    folder.mkdir()
    for src in sorted(AUDIO.glob("*.flac"))[:n]:
        (folder / src.name).symlink_to(src)
    return folder


def run(data: Path, workers: int, root: Path) -> dict:
    out = root / f"w{workers}.h5"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE), "--child", str(data), str(out), str(workers)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    cpu = json.loads(proc.stderr.strip().splitlines()[-1])["parent_cpu_s"]
    return {"wall_s": round(wall, 2), "parent_cpu_s": round(cpu, 3)}


def measure(data: Path, n: int, rounds: int, root: Path) -> dict:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(rounds):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[workers].append(run(data, workers, root))
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[1], runs[2])]
    return {"clips": n, "wall_1_s": [x["wall_s"] for x in runs[1]], "wall_2_s": [x["wall_s"] for x in runs[2]],
            "speedup_2_vs_1": round(statistics.median(ratios), 3), "rounds": [round(x, 3) for x in ratios],
            "parent_cpu_ms_per_clip_2_workers": round(1000 * statistics.median(x["parent_cpu_s"] for x in runs[2]) / n, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1200)
    parser.add_argument("--small", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in (args.clips, args.small):
            if n:
                result = measure(corpus(n, root), n, args.rounds, root)
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
