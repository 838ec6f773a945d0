"""Feeding a split of the store to a model: ready tensors on the training device.

Two paths, chosen by a memory budget (:func:`default_memory_budget` when none is given):

- **resident**: the split fits the budget, so it is read once and kept on the device (GPU
  memory on CUDA, RAM on CPU); every batch is an index into it: no per-row Python, no
  per-batch copies from the host. On CUDA the split is filled chunk by chunk through pinned
  memory, so the host never holds a second full copy.
- **streamed**: the split does not fit, so contiguous chunks of rows are read in a shuffled
  chunk order, each chunk shuffled in turn, by a background thread that reads at most
  ``prefetch`` chunks ahead while the current one is consumed (pinned, with non-blocking
  copies, on CUDA). At most ``prefetch + 2`` chunks are alive at once (the one being consumed,
  the ones queued, the one being read), and the chunk size is the budget divided by that, so a
  store larger than memory trains. Batches are full-sized across chunk boundaries: only the
  last batch of an epoch is short, as on the resident path.

Every random draw (chunk order, row order within a chunk, resident permutation) comes from the
``torch.Generator`` the caller passes, in the consumer's thread, so an epoch's order is a
function of the seed only, never of thread timing.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ser.errors import SerError
from ser.store import Store
from ser.threads import Background

CUDA_BUDGET_FRACTION = 0.5   # of free device memory: the rest is the model's, activations', cuDNN's
HOST_BUDGET_FRACTION = 0.5   # of available RAM (MemAvailable, or the cgroup's headroom if smaller)
MAX_CHUNK_BYTES = 256 * 2**20  # larger chunks shuffle better but delay an epoch's first batch
RESIDENT_FILL_ROWS = 4096    # rows per pinned copy when filling a resident split on CUDA
DEFAULT_PREFETCH = 1         # chunks queued ahead of the consumer (plus the one being read)

_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """``"512MB"`` -> 512_000_000, ``"2GiB"`` -> 2_147_483_648, ``"1.5gb"``, ``"4096"`` (bytes).

    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024; case is ignored.
    """
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise SerError(f"memory size {text!r} is not a number with an optional unit "
                           "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 512MB or 2GB")
        value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise SerError(f"memory size must be positive, got {text!r}")
    return value


def format_size(n: int | float) -> str:
    """Bytes as a short human string: ``1.67 GB``, ``512 MB``, ``772 B``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def available_host_memory() -> int:
    """Bytes of RAM this process could still take: MemAvailable, capped by a cgroup v2 limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 2 * 2**30  # nothing to ask: assume a small machine
    try:  # a container's limit is what the kernel enforces, whatever the host has free
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            headroom = int(limit) - int((cg / "memory.current").read_text().strip())
            avail = min(avail, max(headroom, 0))
    except (OSError, ValueError):
        pass
    return int(avail)


def default_memory_budget(device: torch.device | str) -> int:
    """Bytes the input path may keep: a fraction of free device memory on CUDA
    (``torch.cuda.mem_get_info``), else a fraction of available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    return int(available_host_memory() * HOST_BUDGET_FRACTION)


class _HeldRows:
    """Counts the rows alive in chunk tensors, from the start of their read until the tensor
    is garbage (a ``weakref.finalize``, so it measures lifetimes, not intentions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def acquire(self, k: int) -> None:
        with self._lock:
            self.now += k
            self.peak = max(self.peak, self.now)

    def release(self, k: int) -> None:
        with self._lock:
            self.now -= k

    def track(self, tensor: torch.Tensor, k: int) -> None:
        """``k`` rows already acquired, released when ``tensor`` dies."""
        weakref.finalize(tensor, self.release, k)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


@dataclass
class SplitData:
    """One split's rows: features on the device (``x``, or None when streamed) and labels.

    ``budget_bytes`` is the memory budget the path was chosen by; ``chunk_rows`` and
    ``prefetch`` shape the streamed path (unused when resident). ``peak_rows_held`` is the
    most rows that streamed chunks held at once in host memory (the device's own memory on
    CPU), from the start of a chunk's read until its tensor is freed: it stays within
    ``(prefetch + 2) * chunk_rows``, plus a carried partial batch (under ``batch_size`` rows,
    a copy). On CUDA, ``peak_device_rows_held`` counts the chunks copied to the device: one
    at a time, plus the one being copied in.
    """

    store: Store
    family: str
    rows: np.ndarray              # store row numbers, ascending
    labels: torch.Tensor          # (k,) int64 on the device
    x: torch.Tensor | None        # (k, ...) float32 on the device, or None when streamed
    device: torch.device
    chunk_rows: int = 2048
    budget_bytes: int | None = None
    prefetch: int = DEFAULT_PREFETCH
    _held: _HeldRows = field(default_factory=_HeldRows, repr=False)
    _held_device: _HeldRows = field(default_factory=_HeldRows, repr=False)
    #: applied to every array read, with its store rows: e.g. per-speaker standardisation
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def read_host(self, rows: np.ndarray) -> np.ndarray:
        """Store rows as a host array, through ``transform`` when there is one."""
        x = self.store.read(self.family, rows)
        return x if self.transform is None else self.transform(x, rows)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.store.info["shapes"][self.family][1:])) * 4

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    @property
    def mode(self) -> str:
        budget = f"budget {format_size(self.budget_bytes)}" if self.budget_bytes is not None else "no budget"
        if self.x is not None:
            return f"resident on {self.device.type}, {format_size(self.nbytes)} of {budget}"
        return (f"streamed, {format_size(self.nbytes)} over {budget}: chunks of {self.chunk_rows} rows, "
                f"prefetch {self.prefetch}" + (", pinned" if self._pin else ""))

    @property
    def peak_rows_held(self) -> int:
        return self._held.peak

    @property
    def peak_device_rows_held(self) -> int:
        return self._held_device.peak

    @property
    def _pin(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                keep: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x (b, ...), y (b,))`` batches on the device, every row once (or every row that the
        boolean mask ``keep`` marks, by position in this split); shuffled rows (resident) or
        shuffled chunk order and rows within a chunk (streamed)."""
        if batch_size <= 0:
            raise SerError(f"batch size must be positive, got {batch_size}")
        if keep is not None and keep.shape != (len(self),):
            raise SerError(f"keep must mark each of the split's {len(self)} rows, got shape {keep.shape}")
        if self.x is not None:
            positions = torch.from_numpy(np.flatnonzero(keep)) if keep is not None else torch.arange(len(self))
            order = positions[torch.randperm(len(positions), generator=generator)] if shuffle else positions
            order = order.to(self.device)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                yield self.x[idx], self.labels[idx]
            return
        yield from self._streamed(batch_size, shuffle=shuffle, generator=generator, keep=keep)

    # -- streaming ---------------------------------------------------------------------------
    def _read_chunk(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` of this split (positions, not store rows) as a host tensor, pinned on CUDA."""
        k = hi - lo
        self._held.acquire(k)
        try:
            host = torch.from_numpy(self.read_host(self.rows[lo:hi]))
            if self._pin:  # one host copy more; a Store.read(out=) into pinned memory would save it
                host = host.pin_memory()
        except BaseException:
            self._held.release(k)
            raise
        self._held.track(host, k)
        return host

    def _chunks(self, bounds: list[tuple[int, int]], *,
                to_device: bool = True) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(lo, hi, x)`` for each bound, on the device (or as read, on the host), read by a
        background thread that stays at most ``prefetch`` chunks ahead; the thread stops when
        the consumer does."""
        q: queue.Queue = queue.Queue(maxsize=max(1, self.prefetch))
        stop = threading.Event()

        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for lo, hi in bounds:
                    if stop.is_set():
                        return
                    chunk = self._read_chunk(lo, hi)
                    if not put(chunk):
                        return
                    del chunk  # the queue's reference is the only one now
                put(_END)
            except BaseException as exc:  # handed to the consumer, raised there
                put(_Failure(exc))

        producer = Background(produce, name="ser-prefetch")
        try:
            for lo, hi in bounds:
                item = q.get()
                if isinstance(item, _Failure):
                    raise item.exc
                if item is _END:  # cannot happen before the last bound; guard anyway
                    break
                # pinned memory: the copy is asynchronous, and the caching host allocator keeps
                # the pinned block from reuse until the copy has run, so dropping it here is safe
                x = item.to(self.device, non_blocking=self._pin) if to_device else item
                if x is not item:  # a second pool (device memory) holds the chunk now
                    self._held_device.acquire(hi - lo)
                    self._held_device.track(x, hi - lo)
                del item
                yield lo, hi, x
                del x
        finally:
            stop.set()
            while True:  # unblock a producer waiting on a full queue, then let it finish
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            producer.wait(through_interrupts=True)  # no read may run on after the store is closed

    def _streamed(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
                  keep: np.ndarray | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        starts = list(range(0, n, self.chunk_rows))
        if shuffle:
            starts = [starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()]
        bounds = [(s, min(s + self.chunk_rows, n)) for s in starts]
        carry: tuple[torch.Tensor, torch.Tensor] | None = None  # a partial batch from the last chunk
        for lo, hi, x in self._chunks(bounds):
            y = self.labels[lo:hi]
            idx = None
            positions = torch.from_numpy(np.flatnonzero(keep[lo:hi])) if keep is not None else torch.arange(hi - lo)
            k = len(positions)
            order = (positions[torch.randperm(k, generator=generator)] if shuffle else positions).to(self.device)
            i = 0
            if carry is not None:
                need = batch_size - carry[1].shape[0]
                idx = order[:need]
                carry = (torch.cat([carry[0], x[idx]]), torch.cat([carry[1], y[idx]]))
                i = idx.shape[0]
                if carry[1].shape[0] == batch_size:
                    yield carry
                    carry = None
            while i + batch_size <= k:
                idx = order[i:i + batch_size]
                yield x[idx], y[idx]
                i += batch_size
            if i < k:
                idx = order[i:]
                carry = (x[idx], y[idx])  # copies: the chunk itself is not kept alive
            del x, y, order, idx
        if carry is not None:
            yield carry


def one_row_per_clip(clips: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """A boolean mask choosing, for each clip, one of its rows (variants) at random.

    ``clips`` holds each row's clip (any labels); the choice is drawn from ``generator``, so an
    epoch's choice depends on the seed and the epochs before it only.
    """
    codes = np.unique(np.asarray(clips), return_inverse=True)[1].ravel()
    score = torch.rand(len(codes), generator=generator).numpy()
    # per clip, the row with the lowest random score: sort by (clip, score), take each clip's first
    order = np.lexsort((score, codes))
    keep = np.zeros(len(codes), dtype=bool)
    keep[order[np.r_[True, np.diff(codes[order]) != 0]]] = True
    return keep


def _chunk_rows_for(budget_bytes: int, row_bytes: int, prefetch: int) -> int:
    """Rows per chunk so that ``prefetch + 2`` chunks fit the budget (at least one row)."""
    per_chunk = min(budget_bytes // (prefetch + 2), MAX_CHUNK_BYTES)
    return max(1, int(per_chunk // row_bytes))


def load_split(store: Store, split: str, family: str, device: torch.device, *,
               memory_budget_bytes: int | None = None, chunk_rows: int | None = None,
               prefetch: int = DEFAULT_PREFETCH,
               transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> SplitData:
    """The rows of ``split``; resident on ``device`` if they fit the memory budget
    (:func:`default_memory_budget` of the device when ``memory_budget_bytes`` is None)."""
    return load_rows(store, store.rows(split), family, device, memory_budget_bytes=memory_budget_bytes,
                     chunk_rows=chunk_rows, prefetch=prefetch, transform=transform)


def load_rows(store: Store, rows: np.ndarray, family: str, device: torch.device, *,
              memory_budget_bytes: int | None = None, chunk_rows: int | None = None,
              prefetch: int = DEFAULT_PREFETCH,
              transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> SplitData:
    """Any set of store rows (sorted here), e.g. a cross-validation fold.

    ``chunk_rows`` (streamed path) defaults to the budget divided by ``prefetch + 2``.
    """
    device = torch.device(device)
    if prefetch < 1:
        raise SerError(f"prefetch must be at least 1 chunk, got {prefetch}")
    budget = default_memory_budget(device) if memory_budget_bytes is None else int(memory_budget_bytes)
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    labels = torch.from_numpy(store.meta().loc[rows, "label"].to_numpy(dtype=np.int64, copy=True)).to(device)
    row_bytes = int(np.prod(store.info["shapes"][family][1:])) * 4
    nbytes = int(rows.shape[0]) * row_bytes
    chunk = int(chunk_rows) if chunk_rows else _chunk_rows_for(budget, row_bytes, prefetch)
    data = SplitData(store, family, rows, labels, None, device, chunk, budget, prefetch, transform=transform)
    if nbytes <= budget:
        data.x = _read_resident(data)
    return data


def _read_resident(data: SplitData, *, chunked: bool | None = None) -> torch.Tensor:
    """The whole split on its device. CPU: one read. CUDA (``chunked``): filled chunk by chunk
    through pinned memory, the next chunk read while the last one is copied, so the host never
    holds the whole split."""
    if chunked is None:
        chunked = data.device.type == "cuda"
    if not chunked:
        return torch.from_numpy(data.read_host(data.rows)).to(data.device)
    shape = tuple(data.store.info["shapes"][data.family][1:])
    x = torch.empty((len(data),) + shape, dtype=torch.float32, device=data.device)
    n = len(data)
    bounds = [(lo, min(lo + RESIDENT_FILL_ROWS, n)) for lo in range(0, n, RESIDENT_FILL_ROWS)]
    filler = SplitData(data.store, data.family, data.rows, data.labels, None, data.device,
                       RESIDENT_FILL_ROWS, data.budget_bytes, data.prefetch, transform=data.transform)
    for lo, hi, host in filler._chunks(bounds, to_device=False):
        x[lo:hi].copy_(host, non_blocking=filler._pin)  # straight from pinned memory, no device chunk
    return x


def split_footprint(data: SplitData) -> int:
    """Bytes a split keeps in memory while it is not being iterated: the whole split when
    resident, nothing when streamed (its chunks live only during an epoch)."""
    return data.nbytes if data.x is not None else 0


def fit_statistics(data: SplitData, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Input statistics from training rows only (never validation or test).

    Descriptors: scikit-learn's StandardScaler (``mean_``, ``scale_``), shape ``(D,)``.
    Mel: per-band mean and std over rows and frames, shape ``(n_mels, 1)``.
    """
    if family == "descriptors":
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler()
        for x, _ in data.batches(8192, shuffle=False):
            scaler.partial_fit(x.float().cpu().numpy())
        return (torch.from_numpy(scaler.mean_).float(), torch.from_numpy(scaler.scale_).float())
    total = None
    total_sq = None
    count = 0
    for x, _ in data.batches(1024, shuffle=False):
        x = x.double()
        s, sq = x.sum(dim=(0, 2)), (x * x).sum(dim=(0, 2))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2]
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean * mean, min=1e-12))
    return mean.float().cpu()[:, None], std.float().cpu()[:, None]


def reduced_statistics(data: SplitData, family: str, *,
                       keep: np.ndarray | None = None,
                       reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_statistics` from sums: per-row-set sums, sums of squares and counts (float64),
    passed through ``reduce`` (e.g. an all-reduce over data-parallel ranks) before the division,
    so each process sees the statistics of the union of every process's rows.

    ``keep`` (bool, one per row of ``data`` in row order) leaves rows out of the sums, e.g. the
    wrap-around padding of a shard. Descriptors: StandardScaler's ``mean_``/``scale_`` (population
    std; a constant feature gets scale 1). Mel: per-band mean and std over rows and frames.
    """
    reduce = reduce or (lambda t: t)
    total = total_sq = None
    count = 0
    pos = 0
    for x, _ in data.batches(1024 if family == "mel" else 8192, shuffle=False):
        k = x.shape[0]
        x = x.double()
        if keep is not None:
            mask = torch.from_numpy(np.asarray(keep[pos:pos + k], dtype=bool)).to(x.device)
            x = x[mask]
        pos += k
        dims = (0, 2) if family == "mel" else (0,)
        s, sq = x.sum(dim=dims), (x * x).sum(dim=dims)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * (x.shape[2] if family == "mel" else 1)
    if total is None:  # no rows here: zeros still take part in the reduction
        shape = tuple(data.store.info["shapes"][family][1:2])
        total = torch.zeros(shape, dtype=torch.float64, device=data.device)
        total_sq = torch.zeros_like(total)
    sums = reduce(torch.cat([total.reshape(-1), total_sq.reshape(-1),
                             torch.tensor([float(count)], dtype=torch.float64, device=total.device)]))
    d = total.numel()
    total, total_sq, n = sums[:d].cpu(), sums[d:2 * d].cpu(), float(sums[2 * d])
    if n <= 0:
        raise SerError("no training rows to fit input statistics on")
    mean = total / n
    var = torch.clamp(total_sq / n - mean * mean, min=0.0)
    if family == "mel":
        std = torch.sqrt(torch.clamp(var, min=1e-12))
        return mean.float()[:, None], std.float()[:, None]
    # StandardScaler: a feature whose variance is within rounding of zero is constant -> scale 1
    eps = np.finfo(np.float64).eps
    bound = n * eps * var + (n * mean * eps) ** 2
    std = torch.where(var <= bound, torch.ones_like(var), torch.sqrt(var))
    return mean.float(), std.float()
