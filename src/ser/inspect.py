"""Human-readable descriptions of stores (``ser info``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .store import Store


def describe_store(path: str | Path, *, max_failures: int = 20) -> str:
    """A text report: completeness, configs, counts per split/emotion/speaker/augment, failures."""
    store = Store(path, require_complete=False)
    meta = store.meta()
    info = store.info
    lines = [f"store: {path}",
             f"schema {info['schema_version']}, written by ser {info['package_version']}, "
             f"{'complete' if info['complete'] else 'INCOMPLETE (rerun featurize to finish)'}",
             f"rows: {len(meta)}   clips: {meta['clip_id'].nunique() if len(meta) else 0}   "
             f"descriptors: {info['shapes']['descriptors'][1]}   mel: {info['shapes']['mel'][1:]}",
             f"labels: {', '.join(store.labels)}",
             f"dataset: {info['run_config'].get('dataset')}   data: {info['run_config'].get('data')}",
             f"augment: {', '.join(info['run_config'].get('augment') or []) or 'none'}",
             f"split config: {json.dumps(store.split_config)}",
             f"feature config: {json.dumps(store.feature_config)}"]
    if len(meta):
        originals = meta[meta["augment"] == "none"]
        tables = [
            ("clips per split and emotion (originals)",
             originals.groupby(["split", "emotion"]).size().unstack(fill_value=0)),
            ("rows per split and augmentation", meta.groupby(["split", "augment"]).size().unstack(fill_value=0)),
            ("clips per speaker and split (originals)",
             originals.groupby(["speaker", "split"]).size().unstack(fill_value=0)),
        ]
        for title, table in tables:
            lines += ["", f"{title}:", table.to_string()]
    failures = store.failures()
    lines += ["", f"failures: {len(failures)}"]
    if len(failures):
        shown = failures.head(max_failures)
        lines += [f"  {row.path}: {row.reason}" for row in shown.itertuples()]
        if len(failures) > max_failures:
            lines.append(f"  ... {len(failures) - max_failures} more: pd.read_hdf('{path}', 'failures')")
    return "\n".join(lines)
