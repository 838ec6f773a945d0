"""Fault injection for ``featurize``: SIGKILL at random moments and at every commit point, Ctrl-C.

    flock /tmp/ser-bench.lock python benchmarks/fault_injection.py            # 20 random-kill trials
    flock /tmp/ser-bench.lock python benchmarks/fault_injection.py --trials 40 --strace

What it does, on a small synthetic CREMA-D corpus (:func:`ser.corpus.synth.make_cremad_corpus`) with
a few unusable files mixed in (so the ``failures`` table is exercised too):

1. a clean run gives the reference store;
2. **random kills**: each trial starts featurize in a subprocess, waits until it is working,
   SIGKILLs it after a random delay (one to three times in a row), then reruns the same command
   to the end and compares the store with the reference: same clips, splits, arrays (byte for
   byte), failures; no duplicate and no missing row; no work folder left behind;
3. **commit-point kills** (``--strace``, needs strace): the writer is killed by strace's fault
   injection exactly at its k-th ``rename`` (every part's commit, the header, the final
   replace) and at a sample of its ``pwrite64`` calls, for every k, then resumed and compared;
4. **damaged stores** (``--flips N``): N copies of the reference store, each with 8 bytes
   XOR-ed at a random offset, and N truncated at a random length, are read the way ``ser info``
   reads them (every block, checksums on). Each outcome is counted: reported (a StoreError
   with a message), harmless (nothing reported and the data read equal the reference's),
   silent (nothing reported but the data differ) or a traceback (any other exception);
5. **a worker killed while it writes its part** (``--worker-kills N``): the run is watched until
   one of its worker processes has a ``tmp-*.h5`` part open, and that worker alone is SIGKILLed;
   the run stops with an error, and the rerun must give the clean store;
6. **Ctrl-C** (``--sigints N``): N trials that send SIGINT to featurize's process group (as a
   terminal does) at random moments, one to three times, each time expecting a clean stop (exit
   130) or a finished run; a crash or a hang fails the trial. Then the same command runs to the
   end and the store is compared with the reference.

Prints one line per trial and a summary (trials, kills survived, rows lost, duplicates); exits
non-zero if any store differs from the reference. Small batches (``--task-clips``, default 4)
make many commits per run, so kills land in every phase: decoding, writing parts, committing, merging.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve()


def _config(data: Path, out: Path, workers: int, task_clips: int) -> Any:
    from ser.features.config import FeatureConfig
    from ser.featurize.job import FeaturizeConfig

    return FeaturizeConfig(data=data, out=out, augment=("noise", "shift"), workers=workers,
                           features=FeatureConfig(n_mels=32, max_seconds=1.5), task_clips=task_clips,
                           min_clips_per_worker=1)  # a pool even for this small corpus


def child(data: str, out: str, workers: int, task_clips: int) -> None:
    """The process that gets killed: featurize, announcing on stdout when it starts working."""
    from ser.errors import SerError
    from ser.featurize.job import featurize

    warnings.filterwarnings("ignore", "split not stratified")
    # a shell's background job starts with SIGINT ignored, and Python then keeps it so: Ctrl-C
    # trials would test nothing. The child takes SIGINT as a terminal's foreground job does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("ready", flush=True)
    try:
        featurize(_config(Path(data), Path(out), workers, task_clips), progress=False, log=lambda m: None)
    except KeyboardInterrupt:  # as the CLI does
        print("interrupted", flush=True)
        sys.exit(130)
    except SerError as exc:  # as the CLI does: the message, no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("done", flush=True)


def _child_cmd(data: Path, out: Path, workers: int, task_clips: int) -> list[str]:
    return [sys.executable, str(HERE), "--child", str(data), str(out), str(workers), str(task_clips)]


def make_corpus(root: Path, n_actors: int) -> Path:
    """A synthetic CREMA-D folder plus three unusable files (empty, text, silent)."""
    import soundfile as sf

    from ser.corpus.synth import make_cremad_corpus

    make_cremad_corpus(root, n_actors=n_actors, sentences=("DFA", "IEO"), sr=16000, duration_s=(0.9, 1.8), seed=5)
    audio = root / "AudioWAV"
    (audio / "1091_DFA_ANG_XX.wav").write_bytes(b"")
    (audio / "1091_DFA_SAD_XX.wav").write_text("not audio")
    sf.write(audio / "1091_DFA_HAP_XX.wav", np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    return audio


def compare(ref: Path, got: Path) -> dict[str, Any]:
    """How ``got`` differs from the reference store: rows lost, duplicates, mismatches."""
    import h5py

    from ser.store import Store, read_attrs, work_dir

    result: dict[str, Any] = {"rows_lost": 0, "duplicates": 0, "mismatch": []}
    if not got.exists():
        return {**result, "mismatch": ["no store"], "rows_lost": len(pd.read_hdf(ref, "meta"))}
    ma, mb = pd.read_hdf(ref, "meta"), pd.read_hdf(got, "meta")
    keys = lambda m: list(zip(m["clip_id"], m["augment"]))  # noqa: E731
    result["duplicates"] = int(mb.duplicated(["clip_id", "augment"]).sum())
    result["rows_lost"] = len(set(keys(ma)) - set(keys(mb)))
    if not ma.equals(mb):
        result["mismatch"].append("meta")
    with h5py.File(ref, "r") as fa, h5py.File(got, "r") as fb:
        for name in ("descriptors", "mel"):
            if fa[name].shape != fb[name].shape or fa[name][:].tobytes() != fb[name][:].tobytes():
                result["mismatch"].append(name)
    if not Store(ref).failures().equals(Store(got).failures()):
        result["mismatch"].append("failures")
    ia, ib = read_attrs(ref), read_attrs(got)
    for key in ("run_config", "labels", "descriptor_names", "complete", "plan_digest"):
        if ia[key] != ib[key]:
            result["mismatch"].append(key)
    if work_dir(got).exists():
        result["mismatch"].append("work folder left")
    return result


def run_to_end(cmd: list[str], timeout: float = 600) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or "done" not in proc.stdout:
        raise RuntimeError(f"rerun failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


#: How a signalled run may end, by signal: anything else (a crash, a hang) fails the trial.
_CLEAN_ENDS = {
    signal.SIGKILL: {"killed", "finished before the signal"},
    signal.SIGINT: {"interrupted", "finished before the signal", "finished; Ctrl-C during interpreter exit"},
}


def _wait_for(proc: subprocess.Popen) -> tuple[str, str] | None:
    """``proc``'s output once it ends; None (and its process group killed) if it hangs for 2 minutes."""
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def signal_after(cmd: list[str], delay: float, sig: int) -> str:
    """Start ``cmd``, wait for "ready", sleep ``delay``, send ``sig`` to its process group (the
    parent and its workers: what an OOM kill, a power cut or Ctrl-C in a terminal reaches); how
    the run ended."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.wait()
        return "failed to start"
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    ended = _wait_for(proc)
    if ended is None:
        return "hung"
    out, err = ended
    if proc.returncode == 0:
        return "finished before the signal"
    if proc.returncode == -signal.SIGKILL and sig == signal.SIGKILL:
        return "killed"
    if proc.returncode == 130 and "interrupted" in out:
        return "interrupted"
    if proc.returncode == -signal.SIGINT and "done" in out:  # Python had restored the default handler
        return "finished; Ctrl-C during interpreter exit"
    return f"crashed (exit {proc.returncode}): {err.strip().splitlines()[-1:] if err.strip() else ''}"


def _writing_worker(parent: int) -> int | None:
    """A worker process of ``parent`` that has a part file open for writing (``tmp-*.h5``), if any."""
    for pid in _descendants(parent):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if "/tmp-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return pid
            except OSError:
                continue
    return None


def _descendants(parent: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [parent]
    while todo:
        pid = todo.pop()
        out += children.get(pid, [])
        todo += children.get(pid, [])
    return out


def kill_a_writing_worker(cmd: list[str], timeout: float = 60) -> str:
    """Start ``cmd`` and SIGKILL one of its workers while that worker writes its part; how the run ended."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.wait()
        return "failed to start"
    deadline, killed = time.monotonic() + timeout, False
    while proc.poll() is None and time.monotonic() < deadline and not killed:
        pid = _writing_worker(proc.pid)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed = True
    ended = _wait_for(proc)
    if ended is None:
        return "hung"
    out, err = ended
    if not killed:
        return "finished before the signal"
    if proc.returncode != 0 and "a featurize worker died" in err and "Traceback" not in err:
        return "worker killed; the run stopped with an error"
    return f"worker killed; the run ended with exit {proc.returncode}"


def worker_kill_trials(args: argparse.Namespace, data: Path, ref: Path, work: Path) -> list[dict]:
    """``args.worker_kills`` trials: a worker is SIGKILLed while it writes its part; then the rerun."""
    rows = []
    for trial in range(1, args.worker_kills + 1):
        out = work / f"worker{trial}.h5"
        cmd = _child_cmd(data, out, args.workers, args.task_clips)
        outcome = kill_a_writing_worker(cmd)
        run_to_end(cmd)
        diff = compare(ref, out)
        ok = outcome.startswith("worker killed") and not diff["mismatch"] and not diff["rows_lost"] and not diff["duplicates"]
        rows.append({"trial": trial, "mode": "worker", "workers": args.workers, "kills": int(outcome.startswith("worker killed")),
                     **diff, "ok": ok})
        print(f"worker {trial:3d}: {outcome} -> {'same store as the clean run' if ok else diff}", flush=True)
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        out.unlink(missing_ok=True)
    return rows


def signal_trials(args: argparse.Namespace, data: Path, ref: Path, work: Path, t_run: float, *,
                  sig: int, n: int, mode: str, seed: int) -> list[dict]:
    """``n`` trials: ``sig`` at random moments, one to three times, then the same command to the end."""
    rng = random.Random(seed)
    rows = []
    for trial in range(1, n + 1):
        out = work / f"{mode}{trial}.h5"
        workers = 1 if trial % 2 else args.workers
        cmd = _child_cmd(data, out, workers, args.task_clips)
        outcomes = []
        for _ in range(rng.randint(1, 3)):
            delay = rng.uniform(0.0, t_run)
            outcomes.append((delay, signal_after(cmd, delay, sig)))
        clean = all(o in _CLEAN_ENDS[sig] for _, o in outcomes)
        run_to_end(cmd)
        diff = compare(ref, out)
        ok = clean and not diff["mismatch"] and diff["rows_lost"] == 0 and diff["duplicates"] == 0
        rows.append({"trial": trial, "mode": mode, "workers": workers,
                     "kills": sum(o in ("killed", "interrupted") for _, o in outcomes), **diff, "ok": ok})
        print(f"{mode} {trial:3d} workers={workers} at {', '.join(f'{d:.2f}s:{o}' for d, o in outcomes)} -> "
              f"{'same store as the clean run' if ok else diff}", flush=True)
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        out.unlink(missing_ok=True)
    return rows


def _count_syscalls(cmd: list[str], names: str) -> dict[str, int]:
    """How many times the featurize process, all its threads included, makes each syscall in ``names``."""
    log = tempfile.mktemp(suffix=".strace")
    subprocess.run(["strace", "-qq", "-f", "-o", log, "-e", f"trace={names}", *cmd],
                   check=True, capture_output=True, text=True)
    counts: dict[str, int] = {}
    for line in Path(log).read_text().splitlines():
        line = line.split(" ", 1)[1] if line[:1].isdigit() else line  # "<tid> name(...)"
        name = line.split("(", 1)[0].strip()
        if name in names.split(","):  # not the signal lines strace also writes
            counts[name] = counts.get(name, 0) + 1
    os.unlink(log)
    return counts


def strace_trials(args: argparse.Namespace, data: Path, ref: Path, work: Path) -> list[dict]:
    """Kill the writer exactly at its k-th rename / pwrite64 (strace fault injection), then resume."""
    if shutil.which("strace") is None:
        print("strace not found: commit-point trials skipped")
        return []
    probe = work / "probe.h5"
    cmd = _child_cmd(data, probe, 1, args.task_clips)  # one process: the writer is the tracee
    # the writer makes its renames (the header, each commit, the final publish) on the main thread;
    # -f counts (and kills at) whatever thread makes the k-th call all the same
    counts = _count_syscalls(cmd, "rename,renameat,renameat2,pwrite64")
    shutil.rmtree(probe.with_name(probe.name + ".partial"), ignore_errors=True)
    probe.unlink(missing_ok=True)
    rename = max(("rename", "renameat", "renameat2"), key=lambda n: counts.get(n, 0))
    points = [(rename, k) for k in range(1, counts.get(rename, 0) + 1)]
    n_pw = counts.get("pwrite64", 0)
    if n_pw:
        step = max(1, n_pw // args.pwrite_samples)
        points += [("pwrite64", k) for k in range(1, n_pw + 1, step)]
    print(f"commit points: {counts.get(rename, 0)} {rename} calls, {n_pw} pwrite64 calls; trying {len(points)}",
          flush=True)
    rows = []
    for i, (syscall, k) in enumerate(points, 1):
        out = work / f"sys{i}.h5"
        c = _child_cmd(data, out, 1, args.task_clips)
        proc = subprocess.run(["strace", "-qq", "-f", "-o", "/dev/null",
                               "-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=KILL:when={k}", *c],
                              capture_output=True, text=True)
        killed = proc.returncode != 0 and "done" not in proc.stdout
        run_to_end(_child_cmd(data, out, 1, args.task_clips))
        diff = compare(ref, out)
        ok = not diff["mismatch"] and diff["rows_lost"] == 0 and diff["duplicates"] == 0
        mode = f"strace {syscall}"
        rows.append({"trial": i, "mode": mode, "workers": 1, "kills": int(killed), **diff, "ok": ok})
        print(f"kill at {syscall} #{k:<4d} {'killed' if killed else 'not reached'} -> "
              f"{'same store as the clean run' if ok else diff}", flush=True)
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        out.unlink(missing_ok=True)
    return rows


def damage_trials(args: argparse.Namespace, ref: Path, work: Path) -> dict[str, dict[str, int]]:
    """Flip or cut a copy of the reference store; how does a reader take it?"""
    from ser.errors import StoreError
    from ser.report.info import describe_store
    from ser.store.writer import Store

    rng = random.Random(args.seed + 1)
    data = ref.read_bytes()
    with Store(ref) as good:
        want = (good.meta(), good.failures(), good.read("descriptors", good.rows()), good.read("mel", good.rows()))
    outcomes: dict[str, dict[str, int]] = {}
    bad = work / "damaged.h5"
    for mode in ("flip", "truncate"):
        counts = {"reported": 0, "harmless": 0, "silent": 0, "traceback": 0}
        for _ in range(args.flips):
            copy = bytearray(data)
            if mode == "flip":
                at = rng.randrange(0, len(copy) - 8)
                for i in range(at, at + 8):
                    copy[i] ^= 0x5A
            else:
                copy = copy[: rng.randrange(0, len(copy))]
            bad.write_bytes(bytes(copy))
            try:
                describe_store(bad)
                with Store(bad) as st:
                    got = (st.meta(), st.failures(), st.read("descriptors", st.rows()), st.read("mel", st.rows()))
                same = (got[0].equals(want[0]) and got[1].equals(want[1]) and np.array_equal(got[2], want[2])
                        and np.array_equal(got[3], want[3]))
                counts["harmless" if same else "silent"] += 1
            except StoreError:
                counts["reported"] += 1
            except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
                counts["traceback"] += 1
                print(f"{mode}: {type(exc).__name__}: {exc}", flush=True)
        outcomes[mode] = counts
        print(f"damaged stores ({mode}, {args.flips} copies): " + ", ".join(f"{k} {v}" for k, v in counts.items()),
              flush=True)
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="Random-kill trials.")
    parser.add_argument("--actors", type=int, default=3, help="Synthetic actors (x 2 sentences x 6 emotions clips).")
    parser.add_argument("--workers", type=int, default=2, help="Workers in the even-numbered trials (odd: 1).")
    parser.add_argument("--task-clips", type=int, default=4, help="Clips per task (each task writes one part).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill delays.")
    parser.add_argument("--strace", action="store_true", help="Also kill at every commit point (needs strace).")
    parser.add_argument("--pwrite-samples", type=int, default=12, help="pwrite64 kill points to sample.")
    parser.add_argument("--flips", type=int, default=0, help="Damaged-store trials (flips and truncations each).")
    parser.add_argument("--sigints", type=int, default=0,
                        help="Ctrl-C trials: SIGINT to the process group at random moments, then a rerun.")
    parser.add_argument("--worker-kills", type=int, default=0,
                        help="Trials that SIGKILL one worker while it writes its part, then rerun.")
    parser.add_argument("--json", type=Path, default=None, help="Write the per-trial table here.")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="ser-faults-"))
    try:
        data = make_corpus(work / "corpus", args.actors)
        ref = work / "reference.h5"
        t_run = run_to_end(_child_cmd(data, ref, 1, args.task_clips))
        meta = pd.read_hdf(ref, "meta")
        print(f"corpus: {meta['clip_id'].nunique()} clips + 3 unusable files -> {len(meta)} rows; clean run "
              f"{t_run:.1f} s (tasks of {args.task_clips} clips)", flush=True)
        damage = damage_trials(args, ref, work) if args.flips else {}
        rows = signal_trials(args, data, ref, work, t_run, sig=signal.SIGKILL, n=args.trials, mode="random",
                             seed=args.seed)
        rows += signal_trials(args, data, ref, work, t_run, sig=signal.SIGINT, n=args.sigints, mode="ctrl-c",
                              seed=args.seed + 1)
        rows += worker_kill_trials(args, data, ref, work)
        if args.strace:
            rows += strace_trials(args, data, ref, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame(rows, columns=["trial", "mode", "workers", "kills", "rows_lost", "duplicates",
                                        "mismatch", "ok"])
    for mode, part in table.groupby("mode", sort=False):
        print(f"{mode}: {len(part)} trials, {int(part['kills'].sum())} kills survived, "
              f"rows lost {int(part['rows_lost'].sum())}, duplicates {int(part['duplicates'].sum())}, "
              f"stores unlike the clean run {int((~part['ok'].astype(bool)).sum())}")
    print(f"total: trials {len(table)}, kills survived {int(table['kills'].sum())}, "
          f"rows lost {int(table['rows_lost'].sum())}, duplicates {int(table['duplicates'].sum())}, "
          f"mismatches {int((~table['ok'].astype(bool)).sum())}")
    if args.json:
        args.json.write_text(json.dumps({"kills": rows, "damage": damage}, indent=1, default=str))
    damaged_ok = all(c["silent"] == 0 and c["traceback"] == 0 for c in damage.values())
    return 0 if table["ok"].astype(bool).all() and damaged_ok else 1


if __name__ == "__main__":
    sys.exit(main())
