"""Shared fixtures: small synthetic corpora and one featurized store, built once per session.

Everything here is deterministic (explicit seeds) and small enough for a 2-core machine:

``cremad_corpus``
    ``Path`` of a CREMA-D-style ``AudioWAV`` folder (what ``--data`` takes): 4 actors
    (1001-1004, alternating male/female) x 2 sentences (DFA, IEO) x 6 emotions = 48 clips of
    16-bit PCM at 16 kHz, 0.9-1.8 s long (some longer than ``max_seconds=1.5``, most shorter),
    written by :func:`ser.corpus.synth.make_cremad_corpus` with seed 7. ``VideoDemographics.csv`` lies
    in the parent folder, so the clip table carries sex and age.
``emodb_corpus``
    ``Path`` of an EmoDB-style folder: speakers 03, 08, 09, 10 x texts a01, a02 x all seven
    EmoDB emotions (boredom, ``BOR``, included) = 56 clips at 22.05 kHz (like the real corpus,
    so featurizing it resamples), 0.8-1.2 s, seed 11.
``small_store_config``
    The :class:`ser.featurize.job.FeaturizeConfig` that built ``small_store``: ``cremad_corpus``,
    ``FeatureConfig(n_mels=32, max_seconds=1.5)`` (other fields default: 16 kHz, n_fft 1024,
    hop 256, so mel is ``(32, 94)``), augmentations ``noise,shift`` (the cheap ones), the
    default split (random, test 0.3, val 0.05, seed 42), one worker. Build a variant with
    ``dataclasses.replace(small_store_config, out=tmp_path / "x.h5", ...)``.
``small_store``
    ``Path`` of the complete ``feats.h5`` featurized from ``cremad_corpus`` with
    ``small_store_config``: 48 clips, train clips with ``none`` + ``noise`` + ``shift`` rows,
    val and test clips with ``none`` only. Shared by the whole session: read it, never write
    to it (copy it with ``shutil.copy`` first if a test must change it).

``ctrl_c_later``
    A function ``(after, then=None)``: in ``after`` seconds a real SIGINT reaches the main thread
    (what Ctrl-C does; it interrupts a blocking wait, which ``_thread.interrupt_main`` does not),
    and 0.3 s later ``then()`` runs. Its timers are joined when the test ends.

Session fixtures cost a few seconds once; tests that need their own store should featurize
a few clips (``emotions=("ANG",)``, ``augment=()``) rather than a whole corpus.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ser.features.config import FeatureConfig
from ser.featurize.job import FeaturizeConfig, featurize
from ser.corpus.synth import make_cremad_corpus, make_emodb_corpus

#: How the session's corpora are drawn.
CREMAD_KW = dict(n_actors=4, sentences=("DFA", "IEO"), sr=16000, duration_s=(0.9, 1.8), seed=7)
EMODB_KW = dict(speakers=("03", "08", "09", "10"), texts=("a01", "a02"), emotions="WEAFNTL",
                sr=22050, duration_s=(0.8, 1.2), seed=11)


@pytest.fixture(scope="session")
def cremad_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``AudioWAV`` folder of a 48-clip synthetic CREMA-D corpus (see the module docstring)."""
    root = tmp_path_factory.mktemp("cremad")
    make_cremad_corpus(root, **CREMAD_KW)
    return root / "AudioWAV"


@pytest.fixture(scope="session")
def emodb_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 56-clip synthetic EmoDB folder at 22.05 kHz (see the module docstring)."""
    root = tmp_path_factory.mktemp("emodb")
    make_emodb_corpus(root, **EMODB_KW)
    return root


@pytest.fixture(scope="session")
def small_store_config(cremad_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> FeaturizeConfig:
    """The configuration ``small_store`` is built with (its ``out`` is ``small_store``)."""
    return FeaturizeConfig(
        data=cremad_corpus,
        out=tmp_path_factory.mktemp("store") / "feats.h5",
        augment=("noise", "shift"),
        features=FeatureConfig(n_mels=32, max_seconds=1.5),
        workers=1,
    )


@pytest.fixture(scope="session")
def small_store(small_store_config: FeaturizeConfig) -> Path:
    """A complete store featurized from ``cremad_corpus``; read-only for tests."""
    with warnings.catch_warnings():  # 48 clips are too few to stratify a 5% validation split
        warnings.filterwarnings("ignore", "split not stratified", UserWarning)
        summary = featurize(small_store_config, progress=False, log=lambda msg: None)
    assert summary.n_failures == 0 and summary.n_rows > summary.n_clips
    return Path(summary.store)


@pytest.fixture
def ctrl_c_later() -> Iterator[Callable[..., None]]:
    main = threading.main_thread().ident
    timers: list[threading.Timer] = []

    def schedule(after: float, then: Callable[[], None] | None = None) -> None:
        def fire() -> None:
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.3)
            if then is not None:
                then()

        timers.append(threading.Timer(after, fire))
        timers[-1].start()

    yield schedule
    for timer in timers:
        timer.join()
