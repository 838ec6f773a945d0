"""Which torch device a run uses: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""

from __future__ import annotations

import torch

from ser.errors import SerError

#: Every accepted device name (the ``--device`` choices).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a CUDA device is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SerError("--device cuda asked for, but no CUDA device is available")
    if name not in DEVICES:
        raise SerError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
