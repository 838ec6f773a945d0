"""The shared-memory rings that carry workers' mel rows to the parent (ser.featurize.handover)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import ser.featurize.job as featurize_mod
from ser.featurize import handover
from ser.featurize.job import featurize
from ser.featurize.handover import HandoverError, MelRef, Rings, claim, put
from ser.store.writer import Store

pytestmark = pytest.mark.skipif(not handover.supported(), reason="rings: Linux x86-64 only (elsewhere the pipe)")

SHAPE = (4, 16, 16)  # a clip's rows: 4 variants of a 16 x 16 mel, 4 kB: a slot (a page) exactly


def rows(seed: int, n: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE[1:]).astype(np.float32)


@pytest.fixture()
def rings():
    with Rings(2, slot_bytes=int(np.prod(SHAPE)) * 4, slots=3) as r:
        yield r


def test_rows_come_back_bit_for_bit_and_free_their_slot(rings: Rings) -> None:
    worker = claim(rings.spec)
    try:
        sent = [rows(i) for i in range(3)]
        refs = [put(rings.spec, m, holder=worker) for m in sent]
        assert all(isinstance(r, MelRef) for r in refs)
        assert len({r.slot for r in refs}) == 3
        assert put(rings.spec, rows(9), holder=worker) is None  # full: the caller sends the rows itself
        out = np.empty(SHAPE, dtype=np.float32)
        rings.take(refs[1], out)
        assert np.array_equal(out, sent[1])
        again = put(rings.spec, rows(7), holder=worker)  # the slot taken is free again
        assert again is not None and again.slot == refs[1].slot and again.seq > refs[2].seq
        for ref, want in ((refs[0], sent[0]), (refs[2], sent[2]), (again, rows(7))):
            rings.take(ref, out)
            assert np.array_equal(out, want)
        assert rings.taken == 4
    finally:
        worker.release()


def test_fewer_rows_than_a_slot_holds_and_rows_too_big_for_one(rings: Rings) -> None:
    worker = claim(rings.spec)
    try:
        one = rows(1, n=1)
        ref = put(rings.spec, one, holder=worker)
        assert ref is not None and ref.shape == one.shape
        out = np.empty(one.shape, dtype=np.float32)
        rings.take(ref, out)
        assert np.array_equal(out, one)
        assert put(rings.spec, rows(2, n=5), holder=worker) is None  # 5 variants: more than a slot holds
        assert put(rings.spec, rows(2).astype(np.float64), holder=worker) is None
    finally:
        worker.release()


def test_each_ring_has_one_holder_and_a_released_ring_can_be_claimed_again(rings: Rings) -> None:
    first, second = claim(rings.spec), claim(rings.spec)
    try:
        assert {first.index, second.index} == {0, 1}
        third = claim(rings.spec)
        assert third.index is None and put(rings.spec, rows(0), holder=third) is None  # no ring: the pipe
        first.release()  # a worker that exits drops its lock the same way
        again = claim(rings.spec)
        assert again.index == 0
        again.release()
    finally:
        first.release()
        second.release()


def test_a_ring_of_another_run_is_not_claimed(rings: Rings) -> None:
    stale = dataclasses.replace(rings.spec, token=rings.spec.token + 1)  # same fds, another run's token
    assert claim(stale).index is None


def test_a_slot_that_does_not_hold_the_rows_named_is_an_error(rings: Rings) -> None:
    worker = claim(rings.spec)
    try:
        ref = put(rings.spec, rows(0), holder=worker)
        out = np.empty(SHAPE, dtype=np.float32)
        with pytest.raises(HandoverError, match=f"slot {ref.slot}"):
            rings.take(dataclasses.replace(ref, seq=ref.seq + 1), out)
        rings.take(ref, out)
        with pytest.raises(HandoverError):  # taken twice: the slot was freed
            rings.take(ref, out)
    finally:
        worker.release()


def test_worker_processes_hand_their_mel_rows_over_in_the_rings(small_store: Path, small_store_config,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Rings] = []

    class Recorded(Rings):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(featurize_mod, "Rings", Recorded)
    cfg = dataclasses.replace(small_store_config, out=tmp_path / "rings.h5", workers=2)
    summary = featurize(cfg, progress=False, log=lambda m: None)
    assert len(made) == 1 and made[0].taken == summary.n_clips  # every clip's rows, none by the pipe
    with Store(small_store) as one, Store(cfg.out) as two:
        assert np.array_equal(one.read("mel", np.arange(one.n_rows)), two.read("mel", np.arange(two.n_rows)))


def test_without_rings_the_rows_go_through_the_pipe(small_store: Path, small_store_config, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "supported", lambda: False)
    cfg = dataclasses.replace(small_store_config, out=tmp_path / "pipe.h5", workers=2)
    featurize(cfg, progress=False, log=lambda m: None)
    with Store(small_store) as one, Store(cfg.out) as two:
        assert np.array_equal(one.read("mel", np.arange(one.n_rows)), two.read("mel", np.arange(two.n_rows)))
