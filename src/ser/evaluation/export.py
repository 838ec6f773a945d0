"""Deployment without the training stack: a checkpoint (or a fusion) as one ONNX graph plus a
JSON sidecar, run by onnxruntime with no torch at all.

The graph is the whole :class:`~ser.training.models.SerNet` forward (its input standardisation by
the training set's mean and std, then the network) ending in a **softmax**: its one output,
``probabilities`` ``(batch, classes)``, holds class probabilities in the sidecar's label order,
what ``ser predict`` prints. A fusion becomes one graph too: every member's probabilities,
weighted and summed as :meth:`ser.training.fusion.Fusion.combine` does, with one named input per
kind of feature the members read.

Inputs are float32 with a dynamic batch axis: ``descriptors`` ``(batch, D)`` and/or ``mel``
``(batch, n_mels, frames)``, exactly what :func:`ser.features.extractor.extract` returns for one
clip, stacked. A model trained with per-speaker standardisation (``speaker_norm``) expects its
rows standardised by the speaker's own statistics first, outside the graph (they need several
clips of one speaker, not one row); such an input is named ``<family>_speaker_norm`` and the
sidecar says how to compute it. The sidecar (``model.json`` beside ``model.onnx``: the ONNX
file's name with ``.json``) carries the labels, the feature config, the inputs, the descriptor
names and the ser version: see ``docs/export.md``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ser import __version__
from ser.errors import SerError
from ser.features.config import FeatureConfig, descriptor_names
from ser.training.checkpoint import Checkpoint
from ser.training.fusion import Fusion, load_model
from ser.training.speakers import MIN_CLIPS

#: ONNX opset of the exported graphs: supported by the legacy (TorchScript) exporter and by
#: every onnxruntime since 1.12.
OPSET = 17
SIDECAR_FORMAT = "ser-onnx"
SIDECAR_VERSION = 1
OUTPUT_NAME = "probabilities"
#: How far onnxruntime's probabilities may stray from torch's when an export is checked.
CHECK_TOLERANCE = 1e-4


class ProbabilityGraph(nn.Module):
    """``sum_k w_k * softmax(net_k(inputs[slot_k]))``: what gets traced into the ONNX graph.

    ``slots[k]`` is the index of member ``k``'s input among ``forward``'s arguments; a single
    checkpoint is one member with weight 1 (its softmax is returned unscaled).
    """

    def __init__(self, nets: Sequence[nn.Module], weights: Sequence[float], slots: Sequence[int]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.weights = [float(w) for w in weights]
        self.slots = [int(s) for s in slots]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        for net, w, slot in zip(self.nets, self.weights, self.slots):
            p = torch.softmax(net(inputs[slot]).float(), dim=1)
            if len(self.nets) > 1:
                p = w * p
            out = p if out is None else out + p
        assert out is not None
        return out


def sidecar_path(onnx_path: str | Path) -> Path:
    """The sidecar of ``onnx_path``: the same name with ``.json`` (``model.onnx`` -> ``model.json``)."""
    return Path(onnx_path).with_suffix(".json")


def input_name(family: str, speaker_norm: bool) -> str:
    """An input's name: its family, with ``_speaker_norm`` when it takes per-speaker standardised rows."""
    return f"{family}_speaker_norm" if speaker_norm else family


def _members(model: Checkpoint | Fusion) -> tuple[list[Checkpoint], list[float]]:
    if isinstance(model, Fusion):
        return list(model.members), list(model.weights)
    return [model], [1.0]


def _inputs(members: Sequence[Checkpoint]) -> tuple[list[dict[str, Any]], list[int]]:
    """The graph's inputs (one per family and speaker_norm setting, in member order) and each
    member's slot among them."""
    inputs: list[dict[str, Any]] = []
    slots: list[int] = []
    for m in members:
        norm = bool(m.train_config.get("speaker_norm"))
        name = input_name(m.family, norm)
        shape = [None] + [int(v) for v in m.input_shape]
        known = [i for i, spec in enumerate(inputs) if spec["name"] == name]
        if known and inputs[known[0]]["shape"] != shape:
            raise SerError(f"{m.path}: members reading {name} disagree on its shape "
                           f"({inputs[known[0]]['shape'][1:]} vs {shape[1:]})")
        if not known:
            inputs.append({"name": name, "family": m.family, "shape": shape, "dtype": "float32",
                           "speaker_norm": norm})
        slots.append(known[0] if known else len(inputs) - 1)
    return inputs, slots


def _example_inputs(members: Sequence[Checkpoint], slots: Sequence[int], n_inputs: int, batch: int,
                    seed: int) -> tuple[torch.Tensor, ...]:
    """Random rows around each input's training statistics (its first member's mean and std)."""
    g = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor | None] = [None] * n_inputs
    for m, slot in zip(members, slots):
        if out[slot] is None:
            mean, std = m.model.input_mean, m.model.input_std
            shape = (batch,) + tuple(int(v) for v in m.input_shape)
            out[slot] = mean + std * torch.randn(shape, generator=g)
    return tuple(t.float().contiguous() for t in out)  # type: ignore[union-attr]


def export_onnx(checkpoint_path: str | Path, onnx_path: str | Path, *, opset: int = OPSET,
                check: bool = True) -> Path:
    """Write ``checkpoint_path`` (a checkpoint or a fusion) as ``onnx_path`` plus its sidecar
    (:func:`sidecar_path`); return ``onnx_path``.

    With ``check`` and onnxruntime installed, the written graph is run on a fresh batch (another
    size than the traced one) and must match torch's probabilities, or nothing is written.
    Both files are written atomically (temporary names, then renamed).
    """
    onnx_path, side = Path(onnx_path), sidecar_path(onnx_path)
    if onnx_path.is_dir():
        raise SerError(f"{onnx_path} is a folder; give the ONNX file to write, e.g. {onnx_path / 'model.onnx'}")
    if onnx_path.suffix.lower() == ".json":
        raise SerError(f"{onnx_path}: the ONNX file's name cannot end in .json, the name its sidecar takes")
    model = load_model(checkpoint_path)
    members, weights = _members(model)
    inputs, slots = _inputs(members)
    graph = ProbabilityGraph([m.model.eval() for m in members], weights, slots).eval()
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(onnx_path.name + ".tmp")
    try:
        _trace(graph, _example_inputs(members, slots, len(inputs), 2, seed=0), inputs, tmp, opset)
        checked = _check(tmp, graph, _example_inputs(members, slots, len(inputs), 3, seed=1), inputs) \
            if check else None
        sidecar = _sidecar(model, members, weights, inputs, onnx_path, opset, checked)
        side_tmp = side.with_name(side.name + ".tmp")
        side_tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        side_tmp.replace(side)
        tmp.replace(onnx_path)
    except SerError as exc:
        raise SerError(f"exporting {checkpoint_path} to {onnx_path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return onnx_path


def _trace(graph: ProbabilityGraph, example: tuple[torch.Tensor, ...], inputs: list[dict[str, Any]],
           path: Path, opset: int) -> None:
    """``torch.onnx.export`` with the legacy TorchScript exporter (``dynamo=False``: it needs no
    onnxscript), every input's and the output's first axis dynamic."""
    names = [spec["name"] for spec in inputs]
    axes = {name: {0: "batch"} for name in names + [OUTPUT_NAME]}
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter's deprecation notice, and the SVM's support-vector counts read
        # as Python ints (constants of the graph, which they are)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(graph, example, str(path), dynamo=False, input_names=names,
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; name the model
            raise SerError(f"ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def _check(path: Path, graph: ProbabilityGraph, example: tuple[torch.Tensor, ...],
           inputs: list[dict[str, Any]]) -> str | None:
    """Run ``path`` in onnxruntime on ``example`` and compare with torch; the onnxruntime
    version that agreed, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {spec["name"]: t.numpy() for spec, t in zip(inputs, example)})[0]
    with torch.no_grad():
        want = graph(*example).numpy()
    gap = float(np.max(np.abs(got - want)))
    if got.shape != want.shape or not gap <= CHECK_TOLERANCE:
        raise SerError(f"the exported graph disagrees with torch (largest probability gap {gap:.3g} "
                       f"> {CHECK_TOLERANCE}); nothing was written")
    return str(ort.__version__)


def _speaker_norm_method() -> dict[str, Any]:
    """How ``ser.training.speakers`` standardises a speaker's rows, in words and numbers."""
    return {
        "min_clips": MIN_CLIPS,
        "std_floor": 1e-6,
        "descriptors": "mean and population std (ddof=0) over the speaker's clips, per descriptor: axis 0",
        "mel": "mean and population std (ddof=0) over the speaker's clips and each clip's own frames (the first "
               "n_frames, clipped to 1..width), per mel band: axes 0 and 2",
        "formula": "(x - mean) / max(std, std_floor), statistics in float64, result float32; a mel row's "
                   "frames from n_frames on are then 0",
        "rows": "the speaker's original clips (at least min_clips); ser predict treats the files it is "
                "given as one speaker's",
    }


def _sidecar(model: Checkpoint | Fusion, members: list[Checkpoint], weights: list[float],
             inputs: list[dict[str, Any]], onnx_path: Path, opset: int, checked: str | None) -> dict[str, Any]:
    """The JSON sidecar: what the graph expects and returns, and where it came from."""
    cfg = FeatureConfig.from_dict(model.feature_config)
    fused = isinstance(model, Fusion)
    speaker_norm = any(spec["speaker_norm"] for spec in inputs)
    out: dict[str, Any] = {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "ser_version": __version__,
        "onnx_file": onnx_path.name, "opset": opset, "checked_with_onnxruntime": checked,
        "source": str(Path(model.path).resolve()), "model_name": model.model_name, "fusion": fused,
        "labels": list(model.labels), "feature_config": cfg.to_dict(),
        "inputs": inputs,
        "output": {"name": OUTPUT_NAME, "shape": [None, len(model.labels)], "dtype": "float32",
                   "meaning": "softmax class probabilities, in the order of labels (rows sum to 1)"},
        "speaker_norm": speaker_norm,
    }
    if not fused:
        out.update(family=members[0].family, input_shape=[int(v) for v in members[0].input_shape])
    else:
        out["members"] = [{"model_name": m.model_name, "family": m.family, "weight": w,
                           "input": input_name(m.family, bool(m.train_config.get("speaker_norm"))),
                           "input_shape": [int(v) for v in m.input_shape]} for m, w in zip(members, weights)]
    if any(spec["family"] == "descriptors" for spec in inputs):
        names = descriptor_names(cfg)
        width = next(spec["shape"][1] for spec in inputs if spec["family"] == "descriptors")
        if len(names) != width:
            raise SerError(f"{model.path}: the model reads {width} descriptors, its feature config "
                           f"names {len(names)}")
        out["descriptor_names"] = names
    if speaker_norm:
        out["speaker_norm_method"] = _speaker_norm_method()
    return out


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """A sidecar (give it or its ONNX file), checked to be one; clear errors naming the file."""
    path = Path(path)
    side = path if path.suffix.lower() == ".json" else sidecar_path(path)
    if not side.is_file():
        raise SerError(f"{side}: no such sidecar (ser export writes it beside the ONNX file)")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SerError(f"{side}: not a readable sidecar ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise SerError(f"{side}: not a ser ONNX sidecar")
    if data.get("format_version") != SIDECAR_VERSION:
        raise SerError(f"{side}: sidecar version {data.get('format_version')}, this ser reads {SIDECAR_VERSION}")
    return data
