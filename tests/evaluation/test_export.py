"""ONNX export: every model's graph reproduces torch's probabilities in onnxruntime, a fusion is
one graph with an input per feature kind, and docs/export.md's example is ``ser predict``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

ort = pytest.importorskip("onnxruntime")

from array_store import LABELS, make_array_store  # noqa: E402
from ser.cli import main  # noqa: E402
from ser.errors import CheckpointError, SerError  # noqa: E402
from ser.evaluation import export as export_mod  # noqa: E402
from ser.evaluation.export import export_onnx, read_sidecar, sidecar_path  # noqa: E402
from ser.evaluation.predict import predict_files  # noqa: E402
from ser.features.config import FeatureConfig  # noqa: E402
from ser.store import Store  # noqa: E402
from ser.training.checkpoint import load_checkpoint  # noqa: E402
from ser.training.fusion import load_model, save_fusion  # noqa: E402
from ser.training.loop import TrainConfig, train  # noqa: E402

QUIET = dict(log=lambda m: None)
DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
CNN2D = {"filters": "4,8", "kernels": "3x3,3x5", "pooling": "stats", "time_pool": 2}
CONFIGS = {
    "cnn1d": TrainConfig(model="cnn1d", epochs=1, batch_size=16, patience=0, seed=1),
    "cnn2d": TrainConfig(model="cnn2d", epochs=2, batch_size=16, patience=0, seed=1, hparams=CNN2D),
    "svm": TrainConfig(model="svm"),
    "logreg": TrainConfig(model="logreg"),
    "svm_sn": TrainConfig(model="svm", speaker_norm=True),
    "cnn2d_sn": TrainConfig(model="cnn2d", epochs=1, batch_size=16, patience=0, seed=2, speaker_norm=True,
                            hparams={"filters": "4", "kernels": "3x3", "pooling": "avg"}),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small array store (``"store"``) and a ``best.pt`` per entry of ``CONFIGS``."""
    root = tmp_path_factory.mktemp("export")
    store = make_array_store(root / "a.h5", per_class=10, seed=3, separation=1.0)
    out = {"store": store}
    for name, cfg in CONFIGS.items():
        train(store, cfg, root / name, device="cpu", **QUIET)
        out[name] = root / name / "best.pt"
    return out


def _onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], feeds)[0]


@pytest.mark.parametrize("name", ["cnn1d", "cnn2d", "svm", "logreg"])
def test_the_exported_graph_gives_torchs_probabilities(trained: dict[str, Path], tmp_path: Path, name: str) -> None:
    onnx_path = export_onnx(trained[name], tmp_path / "deploy" / "model.onnx")
    assert onnx_path == tmp_path / "deploy" / "model.onnx" and sidecar_path(onnx_path).name == "model.json"
    ckpt = load_checkpoint(trained[name])
    store = Store(trained["store"])
    x = store.read(ckpt.family, np.arange(7))  # raw features: the graph standardises them itself
    with torch.no_grad():
        want = torch.softmax(ckpt.model(torch.from_numpy(x)), dim=1).numpy()
    got = _onnx(onnx_path, {ckpt.family: x})
    assert got.shape == (7, len(LABELS))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # probabilities, not logits
    side = read_sidecar(onnx_path)
    assert side["labels"] == LABELS and side["model_name"] == name and side["family"] == ckpt.family
    assert side["input_shape"] == list(ckpt.input_shape) and side["speaker_norm"] is False
    assert side["inputs"] == [{"name": ckpt.family, "family": ckpt.family, "shape": [None, *ckpt.input_shape],
                               "dtype": "float32", "speaker_norm": False}]
    assert FeatureConfig.from_dict(side["feature_config"]).to_dict() == ckpt.feature_config
    assert side["ser_version"] == "0.1.0" and side["checked_with_onnxruntime"] == ort.__version__
    assert ("descriptor_names" in side) == (ckpt.family == "descriptors")
    if ckpt.family == "descriptors":
        assert side["descriptor_names"] == store.descriptor_names


def test_the_graph_is_valid_onnx_with_a_dynamic_batch_axis(trained: dict[str, Path], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(export_onnx(trained["svm"], tmp_path / "m.onnx")))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [export_mod.OPSET]
    assert [i.name for i in model.graph.input] == ["descriptors"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    x = Store(trained["store"]).read("descriptors", np.arange(1))  # one row: the batch axis is free
    assert _onnx(tmp_path / "m.onnx", {"descriptors": x}).shape == (1, len(LABELS))


def test_a_fusion_is_one_graph_with_an_input_per_feature_kind(trained: dict[str, Path], tmp_path: Path) -> None:
    fused = save_fusion(tmp_path / "fused.pt", [trained["svm_sn"], trained["cnn2d"], trained["logreg"]], [2, 1, 1])
    onnx_path = export_onnx(tmp_path / "fused.pt", tmp_path / "fused.onnx")
    side = read_sidecar(tmp_path / "fused.json")
    names = ["descriptors_speaker_norm", "mel", "descriptors"]
    assert [s["name"] for s in side["inputs"]] == names and side["fusion"] is True
    assert [m["weight"] for m in side["members"]] == [0.5, 0.25, 0.25]
    assert [m["input"] for m in side["members"]] == ["descriptors_speaker_norm", "mel", "descriptors"]
    assert side["speaker_norm"] is True and side["speaker_norm_method"]["min_clips"] == 5
    store = Store(trained["store"])
    rows = np.arange(9)
    standardised = np.random.default_rng(0).standard_normal((9, len(store.descriptor_names))).astype(np.float32)
    feeds = {"descriptors_speaker_norm": standardised,
             "mel": store.read("mel", rows), "descriptors": store.read("descriptors", rows)}
    with torch.no_grad():
        parts = [torch.softmax(m.model(torch.from_numpy(feeds[n])), dim=1).numpy()
                 for m, n in zip(load_model(tmp_path / "fused.pt").members, names)]
    np.testing.assert_allclose(_onnx(onnx_path, feeds), fused.combine(parts), rtol=0, atol=1e-5)


def _write_clips(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` short noisy tone clips at 16 kHz (one made-up speaker), some longer than max_seconds."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    files = []
    for i in range(n):
        t = np.arange(int(16000 * rng.uniform(0.3, 0.8))) / 16000
        y = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 400) * t) + 0.05 * rng.standard_normal(t.size)
        files.append(str(folder / f"clip{i}.wav"))
        sf.write(files[-1], y.astype(np.float32), 16000)
    return files


def _doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "docs/export.md should hold one python example"
    return blocks[0] + "\nassert 'torch' not in sys.modules, 'the example imported torch'\n"


@pytest.mark.parametrize("which", ["cnn1d", "fusion"])
def test_the_documented_example_runs_without_torch_and_matches_predict(trained: dict[str, Path], tmp_path: Path,
                                                                       which: str) -> None:
    checkpoint = trained["cnn1d"]
    if which == "fusion":  # per-speaker descriptors and per-speaker mel, in one graph
        checkpoint = tmp_path / "fused.pt"
        save_fusion(checkpoint, [trained["svm_sn"], trained["cnn2d_sn"]], [1, 3])
    export_onnx(checkpoint, tmp_path / "model.onnx")
    files = _write_clips(tmp_path / "clips", 6, seed=5)
    script = tmp_path / "predict_onnx.py"
    script.write_text(_doc_example(), encoding="utf-8")
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "model.onnx"), *files],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = [json.loads(line) for line in run.stdout.splitlines()]
    want = predict_files(checkpoint, files)
    assert [g["file"] for g in got] == files and [g["emotion"] for g in got] == [w["emotion"] for w in want]
    np.testing.assert_allclose([list(g["probabilities"].values()) for g in got],
                               [list(w["probabilities"].values()) for w in want], rtol=0, atol=1e-5)


def test_a_graph_that_disagrees_with_torch_is_refused_and_nothing_is_written(trained: dict[str, Path],
                                                                             tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_mod._trace

    def trace_then_change_the_model(graph, *args, **kwargs):  # the torch model drifts after tracing
        real(graph, *args, **kwargs)
        graph.nets[0].input_mean += 1.0

    monkeypatch.setattr(export_mod, "_trace", trace_then_change_the_model)
    with pytest.raises(SerError, match=r"logreg/best\.pt to .*model\.onnx: the exported graph disagrees with torch"):
        export_onnx(trained["logreg"], tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bad_input_is_refused_naming_the_file(trained: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "missing.pt")) + ": no such checkpoint"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: (not a readable checkpoint|refused to load)"):
        export_onnx(tmp_path / "junk.pt", tmp_path / "m.onnx")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a ser checkpoint"):
        export_onnx(tmp_path / "other.pt", tmp_path / "m.onnx")
    with pytest.raises(SerError, match="is a folder"):
        export_onnx(trained["logreg"], tmp_path)
    with pytest.raises(SerError, match=r"m\.json: the ONNX file's name cannot end in \.json"):
        export_onnx(trained["logreg"], tmp_path / "m.json")
    with pytest.raises(SerError, match="m.json: no such sidecar"):
        read_sidecar(tmp_path / "m.onnx")
    (tmp_path / "m.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SerError, match="m.json: not a ser ONNX sidecar"):
        read_sidecar(tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt", "m.json", "other.pt"]


def test_ser_export_writes_the_graph_and_its_sidecar(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "model.onnx"
    res = CliRunner().invoke(main, ["export", "--checkpoint", str(trained["svm_sn"]), "--onnx", str(out)])
    assert res.exit_code == 0, res.output
    assert "input descriptors_speaker_norm: float32 (batch, 193)" in res.output and f"wrote {out}" in res.output
    assert read_sidecar(out)["speaker_norm"] is True
    res = CliRunner().invoke(main, ["export", "--checkpoint", str(trained["svm_sn"]), "--onnx", str(tmp_path)])
    assert res.exit_code != 0 and str(tmp_path) in res.output
