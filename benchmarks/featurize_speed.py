"""Featurize speed: the notebook way (``naive_featurize.py``) against ``ser``'s featurize, side by side.

Generates a synthetic CREMA-D-shaped corpus (real CREMA-D file names and durations, 16 kHz
mono) into a temporary folder, then on the same clips, each run in its own process:

- the naive script, one thread (the per-core anchor);
- ``featurize`` with ``--workers 1`` and ``--workers 2`` (every clip a training clip, so each
  gets the same five variants as the naive script: original + noise, stretch, shift, pitch;
  both feature families, FeatureConfig's defaults).

It prints clips/s, the ratio to the naive script, the scaling from 1 to 2 workers, and the
peak memory of each run: the sum of the RSS of the process and all its children (the joblib
workers), sampled every 50 ms from /proc. Rates are measured after a short warm-up in the same
process (imports, the worker pool, caches), so they are steady-state; the warm-up's cost is
printed beside them. The settings run in rounds, each once per round in turn, and a ratio is
the median of each round's own: this shared VM's speed drifts by about 5% from one minute to
the next, and a ratio of two runs minutes apart moved with it. ``--full`` then featurizes the
whole corpus (7,442 clips) with 2 workers, reporting its wall time and peak memory by quarter
of the run (it must not grow), and with 1 (the scaling without a short run's fixed costs).

    flock /tmp/ser-bench.lock python benchmarks/featurize_speed.py [--clips 200] [--full]

Timed runs share a 2-core machine with other work: check ``uptime`` before trusting them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIPS_CSV = Path("/work/shared/data/cremad-meta/clips.csv")
DEMOGRAPHICS = CLIPS_CSV.parent / "VideoDemographics.csv"
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
WARMUP_CLIPS = 6


# -- memory of a process tree ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mib(pid: int) -> tuple[float, int]:
    """Summed RSS of ``pid`` and all its descendants (MiB), and how many processes that is."""
    seen, todo, total = set(), [pid], 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_kib(p)
        todo += _children(p)
    return total / 1024.0, len(seen)


def tree_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of ``pid`` (default: this process) and its live descendants.

    Less sensitive to other work on a shared machine than wall time: a process waiting for a
    core does not accrue it. Children that already exited are not counted (the joblib workers
    live across the warm-up and the timed run, so a difference of two readings is theirs).
    """
    tick = os.sysconf("SC_CLK_TCK")
    seen, todo, total = set(), [pid or os.getpid()], 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
        todo += _children(p)
    return total / tick


class PeakSampler(threading.Thread):
    """Samples a process tree's summed RSS every ``interval`` s until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, int]] = []  # (time.monotonic(), MiB, processes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            mib, n = tree_rss_mib(self.pid)
            if n and mib:
                self.samples.append((time.monotonic(), mib, n))
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        peak = max(self.samples, key=lambda s: s[1], default=(0.0, 0.0, 0))
        return {"peak_rss_mib": round(peak[1], 1), "processes_at_peak": peak[2]}


def run_child(args: list[str], env: dict | None = None) -> dict:
    """Run this script's ``args`` in a fresh process; its last stdout line is a JSON report."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, text=True)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    out, _ = proc.communicate()
    memory = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit code {proc.returncode}")
    report = json.loads(out.strip().splitlines()[-1])
    report.update(memory, process_wall_s=round(time.perf_counter() - t0, 2))
    if report.get("quarters"):  # the store's progress log: RSS by quarter of the run
        report["rss_by_quarter_mib"] = _quarters(sampler.samples, report["quarters"])
    return report


def _quarters(samples: list, edges: list[float]) -> list[float]:
    """Peak RSS within each quarter of the timed run (edges: time.monotonic(), shared by processes)."""
    out, lo = [], edges[0]
    for hi in edges[1:]:
        inside = [mib for t, mib, _ in samples if lo <= t <= hi]
        out.append(round(max(inside), 1) if inside else float("nan"))
        lo = hi
    return out


# -- the children -------------------------------------------------------------------------------


def child_naive(audio: Path, out_npz: Path, tuning: str = "zero") -> None:
    """The naive script on every clip in ``audio``, one thread; timed after one warm-up clip."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    import naive_featurize as naive
    import torch

    torch.set_num_threads(1)
    paths = sorted(audio.glob("*.wav"))
    t = time.perf_counter()
    kw = {"tuning": 0.0 if tuning == "zero" else None}
    naive.run(paths[:1], **kw)  # imports, numba's first calls, torchaudio's transforms
    warmup = time.perf_counter() - t
    t, cpu = time.perf_counter(), tree_cpu_s()
    descs, mels = naive.run(paths, **kw)
    seconds, cpu = time.perf_counter() - t, tree_cpu_s() - cpu
    # the unaugmented rows, to compare with the store's
    np.savez(out_npz, descriptors=descs[0::5], mel=mels[0::5], paths=np.array([p.name for p in paths]))
    print(json.dumps({"clips": len(paths), "rows": int(descs.shape[0]), "seconds": round(seconds, 3),
                      "clips_per_s": round(len(paths) / seconds, 3), "warmup_s": round(warmup, 2),
                      "cpu_ms_per_clip": round(1000 * cpu / len(paths), 2)}))


def child_project(audio: Path, out: Path, workers: int, *, log_quarters: bool = False) -> None:
    """``ser``'s featurize on every clip in ``audio``, all clips in train (five variants each)."""
    from ser.features.config import FeatureConfig
    from ser.featurize.job import FeaturizeConfig, featurize
    from ser.corpus.splits import SplitConfig

    def config(data: Path, store: Path) -> FeaturizeConfig:
        return FeaturizeConfig(data=data, out=store, augment=("noise", "stretch", "shift", "pitch"),
                               features=FeatureConfig(), split=SplitConfig(test_size=0.0, val_size=0.0),
                               workers=workers, overwrite=True, min_clips_per_worker=1)

    # warm-up on a few clips: imports, the worker pool (loky keeps it for the next call), caches
    warm = out.parent / f"warmup-{workers}"
    warm.mkdir(exist_ok=True)
    for wav in sorted(audio.glob("*.wav"))[:WARMUP_CLIPS]:
        shutil.copy(wav, warm / wav.name)
    t = time.perf_counter()
    featurize(config(warm, out.with_suffix(".warmup.h5")), progress=False, log=lambda m: None)
    warmup = time.perf_counter() - t

    import ser.featurize.job as fz

    marks: list[float] = []
    last: list[float] = []
    cfg = config(audio, out)
    n_total = len(list(audio.glob("*.wav")))
    real_receipts = fz.receipts

    def counted(*args, **kwargs):
        # mark the quarters of the run (RSS by quarter) and when the last task's part is in
        quarters, done = [n_total // 4, n_total // 2, 3 * n_total // 4], 0
        for r in real_receipts(*args, **kwargs):
            done += r.n_clips
            while log_quarters and quarters and done >= quarters[0]:
                quarters.pop(0)
                marks.append(time.monotonic())
            yield r
        last.append(time.perf_counter())

    fz.receipts = counted
    # a first featurize finds no store: the previous repeat's is removed untimed (deleting 64 MB
    # took 36 ms on this VM's ext4, mounted with discard, inside --overwrite's timing otherwise)
    out.unlink(missing_ok=True)
    start = time.monotonic()
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    t, cpu = time.perf_counter(), tree_cpu_s()
    summary = featurize(cfg, progress=False, log=lambda m: None)
    seconds, cpu = time.perf_counter() - t, tree_cpu_s() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    parent_cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)  # children excluded
    end = time.monotonic()
    report = {"workers": workers, "clips": summary.n_clips, "rows": summary.n_rows, "failures": summary.n_failures,
              "seconds": round(seconds, 3), "clips_per_s": round(summary.n_clips / seconds, 3),
              "warmup_s": round(warmup, 2), "cpu_ms_per_clip": round(1000 * cpu / summary.n_clips, 2),
              # the parent's own CPU (its rusage, workers excluded): commits, merge, scan and split
              "parent_cpu_ms_per_clip": round(1000 * parent_cpu / summary.n_clips, 3),
              # from the call to the last task's commit (scan, split, compute, commits); the rest
              # is the merge into the store (arrays, tables, fsync, rename) and the summary read-back
              "until_last_result_s": round(last[0] - t, 3)}
    if log_quarters:
        report["quarters"] = [start, *marks, end]
    print(json.dumps(report))


def child_compute(audio: Path) -> None:
    """``ser``'s per-clip work alone (decode, four augmentations, both feature families), no
    store: what featurize's in-process path runs per clip, timed after a warm-up."""
    from ser.features.config import FeatureConfig
    from ser.featurize.worker import TaskConfig, limit_threads, process_clip, tune_malloc

    cfg = TaskConfig(features=FeatureConfig(), augment=("noise", "stretch", "shift", "pitch"), seed=42)
    paths = sorted(audio.glob("*.wav"))
    limit_threads()
    tune_malloc()
    t = time.perf_counter()
    for p in paths[:WARMUP_CLIPS]:
        process_clip(str(p), p.stem, "train", cfg)
    warmup = time.perf_counter() - t
    t, cpu = time.perf_counter(), tree_cpu_s()
    for p in paths:
        r = process_clip(str(p), p.stem, "train", cfg)
        assert r.error is None, r.error
    seconds, cpu = time.perf_counter() - t, tree_cpu_s() - cpu
    print(json.dumps({"clips": len(paths), "seconds": round(seconds, 3), "clips_per_s": round(len(paths) / seconds, 3),
                      "warmup_s": round(warmup, 2), "cpu_ms_per_clip": round(1000 * cpu / len(paths), 2)}))


# -- the comparison -----------------------------------------------------------------------------


def agreement(npz: Path, store: Path) -> dict:
    """Largest naive-vs-ser differences on the unaugmented rows of the same clips."""
    import numpy as np
    import pandas as pd

    from ser.store.writer import Store

    ref = np.load(npz)
    meta = pd.read_hdf(store, "meta")
    rows = meta.index[meta["augment"] == "none"].to_numpy()
    order = {p: i for i, p in enumerate(meta.loc[rows, "path"])}
    pick = rows[[order[p] for p in ref["paths"]]]
    with Store(store) as s:
        desc, mel = s.read("descriptors", pick), s.read("mel", pick)
        nf = meta.loc[pick, "n_frames"].to_numpy()
    diff = np.abs(desc - ref["descriptors"])
    rel = diff / np.maximum(np.abs(ref["descriptors"]), 1e-3)
    mel_err = max(float(np.abs(mel[i, :, :n] - ref["mel"][i, :, :n]).max()) for i, n in enumerate(nf))
    # tests/test_fast_path.py's tolerance: |fast - naive| <= 1e-3 + 1e-4 |naive|
    used = diff / (1e-3 + 1e-4 * np.abs(ref["descriptors"]))
    return {"descriptor_max_rel": float(rel.max()), "descriptor_median_rel": float(np.median(rel)),
            "descriptor_tolerance_used": float(used.max()), "mel_max_abs_db": mel_err}


def machine() -> dict:
    import numpy as np

    info = {"python": sys.version.split()[0], "numpy": np.__version__}
    for mod in ("scipy", "soxr", "joblib", "numba", "librosa", "torch", "torchaudio"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a version line is optional
            pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                           if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    info["cores"] = os.cpu_count()
    with open("/proc/meminfo") as f:
        info["ram_gib"] = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    info["load_before"] = os.getloadavg()
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="naive vs ser featurize, side by side")
    parser.add_argument("--clips", type=int, default=200, help="clips in the side-by-side comparison")
    parser.add_argument("--full", action="store_true", help="also featurize all 7,442 clips with 2 workers and with 1")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds: every setting once per round, in turn (medians kept; ratios within a round)")
    parser.add_argument("--full-repeat", type=int, default=1,
                        help="rounds on the whole corpus, 2 workers and 1 in turn (the scaling: the median ratio)")
    parser.add_argument("--skip-naive", action="store_true", help="no naive run (for quick checks)")
    parser.add_argument("--naive-estimate-tuning", action="store_true",
                        help="also time the naive script with chroma's default tuning estimation")
    parser.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from ser.corpus.synth import make_cremad_full

    results: dict = {"machine": machine(), "clips": args.clips}
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="ser-bench-"))
    try:
        root = tmp / f"cremad-{args.clips}"
        if not (root / "AudioWAV").is_dir():
            t = time.perf_counter()
            make_cremad_full(root, clips_csv=CLIPS_CSV, limit=args.clips, n_jobs=2)
            print(f"generated {args.clips} clips in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        if DEMOGRAPHICS.is_file():
            shutil.copy(DEMOGRAPHICS, root / DEMOGRAPHICS.name)
        audio = root / "AudioWAV"

        # rounds, each running every setting once in turn, so that this VM's drift (about 5% from one
        # minute to the next) moves a round's settings together: ratios are taken within a round
        settings: list[tuple[str, list[str], dict | None]] = []
        if not args.skip_naive:
            settings.append(("naive", ["_naive", str(audio), str(tmp / "naive.npz")], ONE_THREAD))
        if args.naive_estimate_tuning:
            settings.append(("naive_estimated_tuning",
                             ["_naive", str(audio), str(tmp / "naive-tuning.npz"), "estimate"], ONE_THREAD))
        settings.append(("compute1", ["_compute", str(audio)], None))
        for workers in (1, 2):
            settings.append((f"workers{workers}", ["_project", str(audio), str(tmp / f"w{workers}.h5"), str(workers)],
                             None))
        rounds: list[dict] = []
        for i in range(args.repeat):
            rounds.append({name: run_child(argv, env=env) for name, argv, env in settings})
            print(f"round {i + 1}: " + ", ".join(f"{k} {v['clips_per_s']}" for k, v in rounds[-1].items()),
                  file=sys.stderr)
        for name, _, _ in settings:
            runs = [r[name] for r in rounds]
            results[name] = {"runs": runs, **{key: statistics.median(r[key] for r in runs) for key in
                                              ("clips_per_s", "cpu_ms_per_clip", "until_last_result_s")
                                              if key in runs[0]},
                             "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}

        def per_round(a: str, b: str, key: str = "clips_per_s") -> float:
            """The median over rounds of a's figure over b's, each round's own."""
            return round(statistics.median(r[a][key] / r[b][key] for r in rounds), 3)

        results["scaling_2_vs_1"] = per_round("workers2", "workers1")
        if "naive" in results:
            results["ratio_workers1_vs_naive"] = per_round("workers1", "naive")
            results["ratio_compute_vs_naive"] = per_round("compute1", "naive")
            if "naive_estimated_tuning" in results:
                results["ratio_workers1_vs_naive_estimated_tuning"] = per_round("workers1", "naive_estimated_tuning")
            results["cpu_ratio_vs_naive"] = {k: round(statistics.median(r["naive"]["cpu_ms_per_clip"]
                                                                        / r[k]["cpu_ms_per_clip"] for r in rounds), 2)
                                             for k in ("compute1", "workers1", "workers2")}
            results["agreement_unaugmented"] = agreement(tmp / "naive.npz", tmp / "w1.h5")

        if args.full:
            full = tmp / "cremad-full"
            if not (full / "AudioWAV").is_dir():
                t = time.perf_counter()
                make_cremad_full(full, clips_csv=CLIPS_CSV, n_jobs=2)
                print(f"generated the full corpus in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            # one worker on the whole corpus too: the scaling once the fixed start and end of a
            # run (a few tenths of a second) no longer weigh on it; in rounds, the order turned
            # each round (2 then 1, 1 then 2), as the VM's speed drifts over the minutes a run takes
            full_rounds = []
            for i in range(args.full_repeat):
                runs = {}
                for workers in ((2, 1) if i % 2 == 0 else (1, 2)):
                    runs[f"workers{workers}"] = run_child(
                        ["_project", str(full / "AudioWAV"), str(tmp / f"full{workers}.h5"), str(workers), "--quarters"])
                full_rounds.append(runs)
                print(f"full round {i + 1}: 2 workers {runs['workers2']['clips_per_s']}, 1 worker "
                      f"{runs['workers1']['clips_per_s']} clips/s", file=sys.stderr)
            ratios = [r["workers2"]["clips_per_s"] / r["workers1"]["clips_per_s"] for r in full_rounds]
            for key, workers in (("full", "workers2"), ("full_workers1", "workers1")):
                runs = [r[workers] for r in full_rounds]
                results[key] = {**min(runs, key=lambda x: abs(x["clips_per_s"] - statistics.median(
                    y["clips_per_s"] for y in runs))),  # the run nearest the median rate (the earlier of two as near)
                    "peak_rss_mib": max(x["peak_rss_mib"] for x in runs), "runs": runs}
            results["full"]["audio_hours"] = round(_audio_seconds(full / "AudioWAV") / 3600, 2)
            results["full_scaling_rounds"] = [round(x, 3) for x in ratios]
            results["full_scaling_2_vs_1"] = round(statistics.median(ratios), 3)
        results["machine"]["load_after"] = os.getloadavg()
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)

    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    _summary(results)


def _audio_seconds(folder: Path) -> float:
    import soundfile as sf

    return sum(sf.info(str(p)).duration for p in folder.glob("*.wav"))


def _summary(r: dict) -> None:
    lines = [f"\nmachine: {r['machine'].get('cpu')}, {r['machine']['cores']} cores, {r['machine']['ram_gib']} GiB; "
             f"load before {r['machine']['load_before'][0]:.2f}, after {r['machine']['load_after'][0]:.2f}"]
    n = len(r["workers1"]["runs"])
    lines.append(f"{n} rounds, each setting once per round in turn; figures are medians over the rounds, ratios "
                 "the median of each round's own")
    if "naive" in r:
        lines.append(f"naive (1 thread): {r['naive']['clips_per_s']:.2f} clips/s, "
                     f"peak {r['naive']['peak_rss_mib']} MiB")
    if "naive_estimated_tuning" in r:
        lines.append(f"naive with chroma's tuning estimated (librosa's default): "
                     f"{r['naive_estimated_tuning']['clips_per_s']:.2f} clips/s")
    for w in (1, 2):
        x = r[f"workers{w}"]
        lines.append(f"featurize --workers {w}: {x['clips_per_s']:.2f} clips/s ("
                     f"{r['clips'] / x['until_last_result_s']:.2f} until the last clip's features, before the "
                     f"store is finished), peak {x['peak_rss_mib']} MiB, warm-up {x['runs'][0]['warmup_s']} s, "
                     f"parent's own CPU {x['runs'][0]['parent_cpu_ms_per_clip']} ms a clip (first round)")
    lines.append(f"per-clip work alone (no store), 1 core: {r['compute1']['clips_per_s']:.2f} clips/s")
    if "ratio_workers1_vs_naive" in r:
        tuning = r.get("ratio_workers1_vs_naive_estimated_tuning")
        lines.append(f"per core: featurize {r['ratio_workers1_vs_naive']}x the naive script "
                     + (f"({tuning}x the tuning-estimating one; " if tuning else "(")
                     + f"the per-clip work alone {r['ratio_compute_vs_naive']}x)")
    if "cpu_ratio_vs_naive" in r:
        c = r["cpu_ratio_vs_naive"]
        lines.append(f"CPU time per clip: naive {r['naive']['cpu_ms_per_clip']} ms; per-clip work "
                     f"{r['compute1']['cpu_ms_per_clip']} ms ({c['compute1']}x less); featurize --workers 1 "
                     f"{r['workers1']['cpu_ms_per_clip']} ms ({c['workers1']}x), --workers 2 "
                     f"{r['workers2']['cpu_ms_per_clip']} ms ({c['workers2']}x, parent and workers together)")
    lines.append(f"2 workers / 1 worker: {r['scaling_2_vs_1']}x "
                 f"({r['workers1']['until_last_result_s'] / r['workers2']['until_last_result_s']:.2f}x "
                 f"until the last clip's features)")
    if "agreement_unaugmented" in r:
        a = r["agreement_unaugmented"]
        lines.append(f"agreement on unaugmented rows: descriptors max rel {a['descriptor_max_rel']:.2e} "
                     f"({100 * a['descriptor_tolerance_used']:.0f}% of the test's tolerance), "
                     f"mel max {a['mel_max_abs_db']:.2e} dB")
    if "full" in r:
        f = r["full"]
        lines.append(f"full corpus ({f['clips']} clips, {f['audio_hours']} h, {f['rows']} rows), 2 workers: "
                     f"{f['seconds']:.1f} s ({f['clips_per_s']:.1f} clips/s; the last clip's features at "
                     f"{f['until_last_result_s']:.1f} s), peak {f['peak_rss_mib']} MiB, "
                     f"peak by quarter of the run {f.get('rss_by_quarter_mib')} MiB")
    if "full_workers1" in r:
        f1 = r["full_workers1"]
        lines.append(f"full corpus, 1 worker: {f1['seconds']:.1f} s ({f1['clips_per_s']:.1f} clips/s), peak "
                     f"{f1['peak_rss_mib']} MiB; 2 workers / 1 worker on the full corpus: {r['full_scaling_2_vs_1']}x"
                     + (f" (median of rounds {r['full_scaling_rounds']})" if len(r.get("full_scaling_rounds", ())) > 1
                        else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_naive":
        child_naive(Path(sys.argv[2]), Path(sys.argv[3]), *sys.argv[4:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "_compute":
        child_compute(Path(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_project":
        child_project(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), log_quarters="--quarters" in sys.argv)
    else:
        main()
