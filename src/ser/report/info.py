"""Human-readable descriptions of stores (``ser info``)."""

from __future__ import annotations

import json
from pathlib import Path


from ser.store import Store, StoreChanged


def describe_store(path: str | Path, *, max_failures: int = 20, verify: bool = True) -> str:
    """A text report: completeness, configs, counts per split/emotion/speaker/augment, failures.

    A store still being written is described from the batches committed so far (a snapshot,
    read-only). ``verify`` reads every array block, so a damaged store is reported
    (:class:`~ser.errors.StoreError`) rather than described.
    """
    for attempt in range(3):
        try:
            with Store(path, require_complete=False) as store:
                if verify:
                    store.verify()
                return _describe(store, path, max_failures, verified=verify)
        except StoreChanged:  # its writer finished (or restarted) while we read: read it again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _describe(store: Store, path: str | Path, max_failures: int, *, verified: bool) -> str:
    meta = store.meta()
    info = store.info
    if info["complete"]:
        state = "complete" + (" (every block's checksum verified)" if verified else "")
    elif info.get("writer_pid"):
        state = (f"INCOMPLETE: being written by featurize (pid {info['writer_pid']}); "
                 f"a snapshot of the {len(info['parts'])} batch(es) committed so far")
    else:
        state = (f"INCOMPLETE: featurize was interrupted after {len(info['parts'])} batch(es); "
                 "rerun the same featurize command to finish it")
    lines = [f"store: {path}",
             f"schema {info['schema_version']}, written by ser {info['package_version']}, {state}",
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
