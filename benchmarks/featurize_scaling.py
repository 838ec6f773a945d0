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
  call, so the workers are excluded; commits and the merge included, and the imports the command
  makes once it is called), over the whole command, and its marginal cost: the difference
  between this and a run of 2 workers on the first half of the clips, per clip of the
  difference (what caps the throughput of any number of workers; fixed costs cancel out);
- the floor under any merge that writes the store: the system CPU time of copying the 2-worker
  store's file once with ``os.copy_file_range`` (the kernel putting its bytes into the page
  cache, no user-space copy), per clip.
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
    if folder.exists():  # made already (the half of --clips may be --small)
        return folder
    folder.mkdir()
    for src in sorted(AUDIO.glob("*.flac"))[:n]:
        (folder / src.name).symlink_to(src)
    return folder


def run(data: Path, workers: int, root: Path) -> dict:
    out = root / f"{data.name}-w{workers}.h5"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE), "--child", str(data), str(out), str(workers)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    cpu = json.loads(proc.stderr.strip().splitlines()[-1])["parent_cpu_s"]
    return {"wall_s": round(wall, 2), "parent_cpu_s": round(cpu, 3)}


def copy_floor_ms(store: Path, n: int) -> float:
    """System CPU ms per clip of writing ``store``'s bytes once more, in the kernel."""
    import os
    import resource

    copy = store.with_suffix(".copy")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    with open(store, "rb") as src, open(copy, "wb") as dst:
        left = os.fstat(src.fileno()).st_size
        while left > 0 and (copied := os.copy_file_range(src.fileno(), dst.fileno(), left)):
            left -= copied
    seconds = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    copy.unlink()
    return round(1000 * seconds / n, 3)


def measure(data: Path, n: int, rounds: int, root: Path, half: Path | None = None) -> dict:
    runs: dict[int, list[dict]] = {1: [], 2: []}
    halves: list[dict] = []
    for r in range(rounds):
        for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[workers].append(run(data, workers, root))
        if half is not None:
            halves.append(run(half, 2, root))
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[1], runs[2])]
    cpu2 = statistics.median(x["parent_cpu_s"] for x in runs[2])
    result = {"clips": n, "wall_1_s": [x["wall_s"] for x in runs[1]], "wall_2_s": [x["wall_s"] for x in runs[2]],
              "speedup_2_vs_1": round(statistics.median(ratios), 3), "rounds": [round(x, 3) for x in ratios],
              "parent_cpu_ms_per_clip_2_workers": round(1000 * cpu2 / n, 3)}
    if half is not None:
        marginal = (cpu2 - statistics.median(x["parent_cpu_s"] for x in halves)) / (n - n // 2)
        result["parent_cpu_ms_per_clip_marginal"] = round(1000 * marginal, 3)
        result["store_copy_floor_sys_ms_per_clip"] = copy_floor_ms(root / f"{data.name}-w2.h5", n)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1200)
    parser.add_argument("--small", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n, half in ((args.clips, args.clips // 2), (args.small, 0)):
            if n:
                result = measure(corpus(n, root), n, args.rounds, root, corpus(half, root) if half else None)
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    else:
        main()
