"""``ser demo`` from the top: the experiment's steps, then its figures and the exploration page."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ser.experiments.demo import DemoConfig, DemoResult, DemoSteps, log_done, run_demo
from ser.report.explore import explore
from ser.report.runs import draw_confusion, draw_curves


def demo(cfg: DemoConfig = DemoConfig(), *,
         log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> DemoResult:
    """Run the demo (:func:`ser.experiments.demo.run_demo`), draw ``curves.png`` and
    ``eval-test/confusion.png``, write the exploration page (step 5) unless ``cfg.explore`` is
    off, and log where everything is."""
    steps = DemoSteps(log)
    result = run_demo(cfg, log=log, steps=steps)
    draw_curves(result.run_dir)
    draw_confusion(result.eval_dir)
    report = None
    if cfg.explore:
        folder = Path(cfg.out) / "report"
        steps.say(f"writing the exploration report to {folder}")
        report = explore(folder, data=result.corpus, store=result.store, seed=cfg.seed)
    result = replace(result, report=report, seconds=steps.seconds)
    log_done(result, log)
    return result
