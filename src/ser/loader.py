"""Feeding a split of the store to a model: ready tensors on the training device.

When the split fits the memory budget it is read once and kept on the device (GPU memory
on CUDA), and every batch is an index into it: no per-row Python, no per-batch copies.
When it does not fit, contiguous chunks are read in a shuffled chunk order and prefetched
into pinned memory, so a store larger than memory still trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .store import Store


@dataclass
class SplitData:
    """One split's rows: features on the device (or None when streamed) and labels."""

    store: Store
    family: str
    rows: np.ndarray              # store row numbers, ascending
    labels: torch.Tensor          # (k,) int64 on the device
    x: torch.Tensor | None        # (k, ...) float32 on the device, or None when streamed
    device: torch.device
    chunk_rows: int = 2048

    @property
    def mode(self) -> str:
        return "resident" if self.x is not None else f"streamed (chunks of {self.chunk_rows} rows)"

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` batches on the device; shuffled rows (resident) or chunk order (streamed)."""
        n = len(self)
        if self.x is not None:
            order = (torch.randperm(n, generator=generator) if shuffle else torch.arange(n)).to(self.device)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                yield self.x[idx], self.labels[idx]
            return
        yield from self._streamed(batch_size, shuffle=shuffle, generator=generator)

    def _streamed(self, batch_size: int, *, shuffle: bool,
                  generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        starts = torch.arange(0, n, self.chunk_rows)
        if shuffle:
            starts = starts[torch.randperm(len(starts), generator=generator)]
        pin = self.device.type == "cuda"

        def fetch(start: int) -> tuple[torch.Tensor, torch.Tensor]:
            sel = slice(start, min(start + self.chunk_rows, n))
            host = torch.from_numpy(self.store.read(self.family, self.rows[sel]))
            if pin:
                host = host.pin_memory()
            return host.to(self.device, non_blocking=pin), self.labels[sel]

        for start in starts.tolist():
            x, y = fetch(start)
            order = (torch.randperm(len(y), generator=generator) if shuffle else torch.arange(len(y))).to(self.device)
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                yield x[idx], y[idx]


def load_split(store: Store, split: str, family: str, device: torch.device, *,
               memory_budget_bytes: int | None = None, chunk_rows: int = 2048) -> SplitData:
    """The rows of ``split``; resident on ``device`` if they fit ``memory_budget_bytes``."""
    return load_rows(store, store.rows(split), family, device, memory_budget_bytes=memory_budget_bytes,
                     chunk_rows=chunk_rows)


def load_rows(store: Store, rows: np.ndarray, family: str, device: torch.device, *,
              memory_budget_bytes: int | None = None, chunk_rows: int = 2048) -> SplitData:
    """Any set of store rows (ascending), e.g. a cross-validation fold."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    labels = torch.from_numpy(store.meta().loc[rows, "label"].to_numpy(dtype=np.int64, copy=True)).to(device)
    shape = store.info["shapes"][family][1:]
    nbytes = int(rows.shape[0] * np.prod(shape) * 4)
    if memory_budget_bytes is None or nbytes <= memory_budget_bytes:
        x = torch.from_numpy(store.read(family, rows)).to(device)
        return SplitData(store, family, rows, labels, x, device, chunk_rows)
    return SplitData(store, family, rows, labels, None, device, chunk_rows)


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
