"""``ser demo``: the whole flow on a small synthetic CREMA-D-style corpus, on CPU, in minutes.

Generate audio (:mod:`ser.corpus.synth`) → featurize → train cnn1d → evaluate, here; the figures
and the exploration page (step 5) are added by :func:`ser.report.demo.demo`, which sits above.
The corpus is synthetic: its accuracy says the pipeline works end to end, not how well a model
hears emotion.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ser.corpus.splits import SplitConfig
from ser.corpus.synth import make_cremad_corpus
from ser.evaluation.evaluator import evaluate
from ser.evaluation.metrics import format_metrics
from ser.features.config import FeatureConfig
from ser.featurize.job import FeaturizeConfig, featurize
from ser.training.loop import TrainConfig, train

#: Steps of the whole demo, the exploration page included (so the numbering reads "[k/5 ...]").
DEMO_STEPS = 5


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("ser-demo")
    n_actors: int = 6
    sentences: tuple[str, ...] = ("DFA", "IEO", "IOM", "ITH")
    duration_s: tuple[float, float] = (1.2, 1.8)
    epochs: int = 6
    workers: int = min(2, os.cpu_count() or 1)
    seed: int = 42
    explore: bool = True


class DemoSteps:
    """Numbered, timed step headers on the log: ``[k/5   t s] message``, ``t`` from the start."""

    def __init__(self, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
        self.log = log
        self.t0 = time.perf_counter()
        self.step = 0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        self.step += 1
        self.log(f"\n[{self.step}/{DEMO_STEPS} {self.seconds:5.1f}s] {msg}")


@dataclass
class DemoResult:
    metrics: dict[str, Any]   # the test evaluation's metrics
    corpus: Path              # the generated audio folder
    store: Path
    run_dir: Path             # the cnn1d run: best.pt, last.pt, history.csv
    eval_dir: Path            # the test evaluation: metrics.json, predictions.csv
    seconds: float
    report: Path | None = None  # the exploration page, once written

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "best.pt"


def run_demo(cfg: DemoConfig = DemoConfig(), *, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
             steps: DemoSteps | None = None) -> DemoResult:
    """Steps 1 to 4 (generate, featurize, train, evaluate), logging each; numbers only, no figures."""
    steps = steps or DemoSteps(log)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus"
    steps.say(f"generating a synthetic CREMA-D-style corpus ({cfg.n_actors} actors x {len(cfg.sentences)} "
              f"sentences x 6 emotions) in {corpus}")
    written = make_cremad_corpus(corpus, n_actors=cfg.n_actors, sentences=cfg.sentences,
                                 duration_s=cfg.duration_s, seed=cfg.seed)
    store_path = out / "feats.h5"
    steps.say(f"featurizing {len(written)} clips with {cfg.workers} worker(s) into {store_path}")
    fcfg = FeaturizeConfig(data=corpus / "AudioWAV", out=store_path, features=FeatureConfig(max_seconds=2.0),
                           split=SplitConfig(seed=cfg.seed), workers=cfg.workers, overwrite=True)
    summary = featurize(fcfg, progress=sys.stderr.isatty(), log=log)
    log(f"  {summary.n_rows} rows from {summary.n_clips} clips in {summary.seconds:.1f} s")
    run_dir = out / "runs" / "cnn1d"
    steps.say(f"training cnn1d for {cfg.epochs} epochs into {run_dir}")
    train(store_path, TrainConfig(model="cnn1d", epochs=cfg.epochs, seed=cfg.seed, patience=0), run_dir,
          device="auto", log=log)
    steps.say("evaluating best.pt on the test split")
    result = evaluate(run_dir / "best.pt", split="test", out_dir=run_dir / "eval-test", log=log)
    log(format_metrics(result.metrics))
    return DemoResult(metrics=result.metrics, corpus=corpus / "AudioWAV", store=store_path, run_dir=run_dir,
                      eval_dir=run_dir / "eval-test", seconds=steps.seconds)


def log_done(result: DemoResult, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
    """The closing lines: where everything is, and what the synthetic accuracy means."""
    log(f"\ndone in {result.seconds:.0f} s. store: {result.store}   checkpoint: {result.checkpoint}   "
        f"evaluation: {result.eval_dir}" + (f"   report: {result.report}" if result.report else ""))
    log("note: the corpus is synthetic; its accuracy shows the pipeline works, not real-world performance")
