"""Workers' mel rows handed to the parent through shared memory instead of the result pipe.

A worker's result used to travel whole through the process pool's result pipe: pickled (a
copy), written into a 64 KB pipe piece by piece while the parent's receiving thread read it
(the worker blocked until the last piece was read: ~2–3 ms a task of four clips, ~5% of a
worker's time on two cores), gathered (a copy) and unpickled (another) before the parent
copied it into its batch. Now the parent gives each worker process a *ring* of slots in shared
memory, one clip's mel rows a slot. The worker copies a clip's rows into a free slot and
returns only where they are (:class:`MelRef`); the parent copies them from the slot straight
into its batch and frees the slot. The descriptors, the names and everything else still go
through the pipe: a few kB a clip.

Nothing ever waits for a slot. Where a worker has no ring (the platform lacks one, more
workers than rings, ``/proc`` unreadable), where its ring is full (the parent is behind by
more clips than a ring holds) or where the rows do not fit a slot, the rows go through the
pipe as before: the same results either way, only slower.

The rings are ``memfd`` files of the parent's (Linux): a worker opens one through
``/proc/<parent>/fd/<fd>`` and holds an exclusive ``flock`` on it, which the kernel drops when the
worker exits, however it ends, so a worker started in a dead one's place claims its ring. No
name is left behind anywhere: a ring's memory is freed when the parent and the worker holding it
have both closed it, and a crash closes it too. A worker keeps its claim until a later run hands
it new rings. Each ring begins with the parent's random token (a worker checks it: a descriptor
number of a closed ring may since name another file) and a state word per slot: 0 free, or the
sequence number of the rows the slot holds, which the worker sets after writing them and the
parent checks before it copies them out and frees the slot.

The order of those memory operations between the processes holds on x86-64 (the worker's
writes reach the parent before the pipe message that names them, a syscall; the parent's reads
of a slot are done before its store that frees the slot, since x86 never lets a store pass
earlier loads). Weaker memory models need fences that Python does not offer, so the rings are
used on Linux x86-64 only; elsewhere everything goes through the pipe.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import platform
import secrets
import sys
from dataclasses import dataclass

import numpy as np

from ser.errors import SerError

#: Slots in each worker's ring (one clip's mel rows each): eight tasks of four clips. The parent
#: takes results in plan order, so a worker's results wait there while an earlier task of
#: another worker is still running or a batch is being handed to the committer.
RING_SLOTS = 32
_PAGE = 4096
#: The ring's first words: the token, the last sequence number handed out; then one state per slot.
_TOKEN, _LAST_SEQ, _STATES = 0, 1, 2


class HandoverError(SerError):
    """A slot does not hold the rows a result says it does (a bug, never a bad input)."""


def supported() -> bool:
    """Whether rings can be used here: Linux (``memfd``, ``/proc``) on x86-64 (see the module's text)."""
    return (sys.platform.startswith("linux") and hasattr(os, "memfd_create")
            and platform.machine().lower() in ("x86_64", "amd64"))


def _round_up(n: int, to: int = _PAGE) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class RingSpec:
    """What each task carries to the workers: where the rings are, and their shape."""

    pid: int
    fds: tuple[int, ...]
    token: int
    slots: int
    slot_bytes: int

    @property
    def header_bytes(self) -> int:
        return _round_up(8 * (_STATES + self.slots))

    @property
    def size(self) -> int:
        return self.header_bytes + self.slots * self.slot_bytes


@dataclass(frozen=True)
class MelRef:
    """In a result, in place of its mel rows: the ring and slot that hold them."""

    ring: int
    slot: int
    seq: int
    shape: tuple[int, ...]


def _rows(slots: np.ndarray, slot: int, shape: tuple[int, ...]) -> np.ndarray:
    """One slot's bytes seen as float32 mel rows of ``shape`` (a view, no copy)."""
    return slots[slot, :int(np.prod(shape)) * 4].view(np.float32).reshape(shape)


def _views(mapped: mmap.mmap, spec: RingSpec) -> tuple[np.ndarray, np.ndarray]:
    """A ring's header words and its slots' bytes, as arrays over the map."""
    words = np.frombuffer(mapped, dtype=np.int64, count=_STATES + spec.slots)
    slots = np.frombuffer(mapped, dtype=np.uint8, count=spec.slots * spec.slot_bytes, offset=spec.header_bytes)
    return words, slots.reshape(spec.slots, spec.slot_bytes)


class Rings:
    """The parent's side: one ring per worker, created empty; :meth:`take` copies rows out.

    ``slot_bytes``: the most bytes one clip's mel rows take (all its variants)."""

    def __init__(self, n_rings: int, slot_bytes: int, slots: int = RING_SLOTS) -> None:
        self.spec: RingSpec | None = None
        self.taken = 0  # clips whose rows came through a ring (for tests and benchmarks)
        self._fds: list[int] = []
        self._maps: list[mmap.mmap] = []
        self._words: list[np.ndarray] = []
        self._slots: list[np.ndarray] = []
        token = secrets.randbits(62) + 1
        probe = RingSpec(os.getpid(), (), token, slots, _round_up(slot_bytes))
        try:
            for _ in range(n_rings):
                fd = os.memfd_create("ser-handover", os.MFD_CLOEXEC)
                self._fds.append(fd)
                os.ftruncate(fd, probe.size)
                self._maps.append(mmap.mmap(fd, probe.size))
                words, data = _views(self._maps[-1], probe)
                words[_TOKEN] = token
                self._words.append(words)
                self._slots.append(data)
        except BaseException:
            self.close()
            raise
        self.spec = dataclasses.replace(probe, fds=tuple(self._fds))

    def take(self, ref: MelRef, out: np.ndarray) -> None:
        """Copy the rows ``ref`` names into ``out`` (float32, ``ref.shape``) and free their slot."""
        words = self._words[ref.ring]
        if words[_STATES + ref.slot] != ref.seq:
            raise HandoverError(f"shared-memory ring {ref.ring}, slot {ref.slot}: expected rows #{ref.seq}, "
                                f"found state {int(words[_STATES + ref.slot])}; please report this")
        out[...] = _rows(self._slots[ref.ring], ref.slot, ref.shape)
        words[_STATES + ref.slot] = 0  # after the copy (x86: this store cannot pass its loads)
        self.taken += 1

    def close(self) -> None:
        """Unmap and close the rings (idempotent). Workers keep what they mapped until they let go."""
        self._words.clear()
        self._slots.clear()  # the views go before their maps can close
        for m in self._maps:
            m.close()
        self._maps.clear()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "Rings":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Claim:
    """A worker's hold on one ring of one run."""

    spec: RingSpec
    index: int | None          # None: no ring could be had for this spec
    fd: int = -1
    mapped: mmap.mmap | None = None
    words: np.ndarray | None = None
    slots: np.ndarray | None = None
    next: int = 0

    def release(self) -> None:
        self.words = self.slots = None
        if self.mapped is not None:
            self.mapped.close()
            self.mapped = None
        if self.fd >= 0:
            os.close(self.fd)  # drops the flock: another worker may claim the ring
            self.fd = -1


def claim(spec: RingSpec) -> _Claim:
    """The first ring of ``spec`` that no other process holds, locked for this one; ``index``
    None if there is none (all taken, or ``/proc`` or ``flock`` not available)."""
    import fcntl

    for index, fd in enumerate(spec.fds):
        try:
            own = os.open(f"/proc/{spec.pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        mapped = None
        try:
            fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(own).st_size != spec.size:
                raise OSError("not this run's ring")
            mapped = mmap.mmap(own, spec.size)
            if int.from_bytes(mapped[:8], sys.byteorder, signed=True) != spec.token:
                raise OSError("the fd number names another file by now")
        except OSError:
            if mapped is not None:
                mapped.close()
            os.close(own)
            continue
        return _Claim(spec, index, own, mapped, *_views(mapped, spec))
    return _Claim(spec, None)


_CLAIM: _Claim | None = None  # this worker process's


def _own_claim(spec: RingSpec) -> _Claim:
    global _CLAIM
    if _CLAIM is None or _CLAIM.spec != spec:
        if _CLAIM is not None:
            _CLAIM.release()
        _CLAIM = claim(spec)
    return _CLAIM


def put(spec: RingSpec, mel: np.ndarray, *, holder: _Claim | None = None) -> MelRef | None:
    """Worker side: copy one clip's mel rows into a free slot of this process's ring and return
    where they are, or None (no ring, no free slot, too big: the caller sends them as they are).
    ``holder``: a claim to use instead of this process's own (tests)."""
    c = holder if holder is not None else _own_claim(spec)
    if c.index is None or mel.dtype != np.float32 or mel.nbytes > spec.slot_bytes:
        return None
    states = c.words[_STATES:]
    for j in range(spec.slots):
        i = (c.next + j) % spec.slots
        if states[i] == 0:
            break
    else:
        return None
    seq = int(c.words[_LAST_SEQ]) + 1
    c.words[_LAST_SEQ] = seq  # kept in the ring: a worker that claims it after this one goes on counting
    _rows(c.slots, i, mel.shape)[...] = mel
    states[i] = seq  # after the rows; the pipe message naming them follows
    c.next = i + 1
    return MelRef(c.index, i, seq, tuple(mel.shape))
