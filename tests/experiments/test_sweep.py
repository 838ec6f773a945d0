"""Sweeps: grids of training configs from one load of the store, ranked on validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from array_store import make_array_store
from ser.cli import main
from ser.errors import SerError
from ser.evaluation.evaluator import evaluate
from ser.experiments.sweep import apply_overrides, grid_points, parse_sweep, run_sweep
from ser.training.checkpoint import load_checkpoint
from ser.training.loop import TrainConfig

QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def array_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_array_store(tmp_path_factory.mktemp("arr") / "arr.h5", per_class=30, seed=0)


def test_sweep_table_has_one_row_per_grid_point(array_store: Path, tmp_path: Path) -> None:
    grid = parse_sweep(["optimizer=adam,sgd,rmsprop", "lr=0.01,0.001"])
    assert grid == {"optimizer": ["adam", "sgd", "rmsprop"], "lr": ["0.01", "0.001"]}
    results = run_sweep(array_store, TrainConfig(model="cnn1d", epochs=1, batch_size=32, patience=0), grid, tmp_path,
                        device="cpu", **QUIET)
    table = pd.read_csv(tmp_path / "results.csv", dtype=str)
    assert len(table) == 6 == len(results)
    assert set(zip(table["optimizer"], table["lr"])) == {(o, l) for o in ("adam", "sgd", "rmsprop") for l in ("0.01", "0.001")}
    assert (tmp_path / "results.md").read_text().count("\n") == 2 + 6
    scores = list(zip(table["val_uar"].astype(float), table["val_accuracy"].astype(float)))
    assert scores == sorted(scores, reverse=True)  # ranked by validation UAR, the default --select
    best = load_checkpoint(tmp_path / "best.pt")
    winner = table.iloc[0]
    assert best.train_config["optimizer"] == winner["optimizer"]
    assert best.train_config["lr"] == float(winner["lr"])
    # every run is scored on the test split too, and the figure is evaluate's own
    for _, row in table.iterrows():
        ev = evaluate(tmp_path / row["run"] / "best.pt", split="test", **QUIET)
        assert float(row["test_accuracy"]) == round(ev.metrics["accuracy"], 4)
        assert float(row["test_macro_f1"]) == round(ev.metrics["f1_macro"], 4)


def test_sweep_values_with_commas_use_a_bar() -> None:
    grid = parse_sweep(["filters=128,128,64|512,256,256", "kernels=3x3,3x3,3x3|1x3,3x5,3x5"])
    assert grid["filters"] == ["128,128,64", "512,256,256"]
    cfg = apply_overrides(TrainConfig(model="cnn2d"), {"filters": "8,8", "kernels": "1x3,3x5", "lr": "0.01"})
    assert cfg.hparams["filters"] == [8, 8] and cfg.hparams["kernels"] == [[1, 3], [3, 5]] and cfg.lr == 0.01
    with pytest.raises(SerError, match="KEY=V1,V2"):
        parse_sweep(["optimizer"])


def test_joined_sweep_keys_change_together(array_store: Path, tmp_path: Path) -> None:
    """The study's cnn2d table is a list of (filters, kernels) rows, not their product."""
    grid = parse_sweep(["filters+kernels=4,4;1x3,3x5|8;3x3", "lr=0.01,0.001"])
    assert grid_points(grid) == [
        {"filters": "4,4", "kernels": "1x3,3x5", "lr": "0.01"}, {"filters": "4,4", "kernels": "1x3,3x5", "lr": "0.001"},
        {"filters": "8", "kernels": "3x3", "lr": "0.01"}, {"filters": "8", "kernels": "3x3", "lr": "0.001"}]
    with pytest.raises(SerError, match="2 parts separated by ';'"):
        parse_sweep(["filters+kernels=4,4;1x3,3x5|8"])
    run_sweep(array_store, TrainConfig(model="cnn2d", epochs=1, batch_size=32, patience=0),
              parse_sweep(["filters+kernels=4,4;1x3,3x5|8;3x3"]), tmp_path, device="cpu", **QUIET)
    table = pd.read_csv(tmp_path / "results.csv", dtype=str)
    assert sorted(zip(table["filters"], table["kernels"])) == [("4,4", "1x3,3x5"), ("8", "3x3")]
    for _, row in table.iterrows():
        hp = load_checkpoint(tmp_path / row["run"] / "best.pt").hparams
        assert [list(k) for k in hp["kernels"]] == [[int(n) for n in k.split("x")] for k in row["kernels"].split(",")]


def test_cli_sweep_draws_every_run(array_store: Path, tmp_path: Path) -> None:
    """``train --sweep``: the results table, the winner's best.pt, and each run's figures
    (curves.png beside its history, confusion.png beside its test metrics)."""
    r = CliRunner().invoke(main, ["train", "--store", str(array_store), "--model", "cnn1d", "--epochs", "1",
                                  "--batch-size", "32", "--patience", "0", "--device", "cpu",
                                  "--sweep", "optimizer=adam,sgd", "--out", str(tmp_path / "sw")])
    assert r.exit_code == 0, r.output
    assert "| optimizer |" in r.output and "checkpoint:" in r.output
    table = pd.read_csv(tmp_path / "sw" / "results.csv", dtype=str)
    assert sorted(table["optimizer"]) == ["adam", "sgd"] and (tmp_path / "sw" / "best.pt").is_file()
    for run in table["run"]:
        for name in ("history.csv", "curves.png", "test/metrics.json", "test/predictions.csv", "test/confusion.png"):
            assert (tmp_path / "sw" / run / name).stat().st_size > 0, (run, name)
