"""Empty audio-named files for the scan tests: scan reads names only, never the audio."""

from __future__ import annotations

from pathlib import Path


def make_files(root: Path, names: list[str]) -> Path:
    """Empty files with these relative names: enough, since scan reads names only."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root
