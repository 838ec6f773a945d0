"""The command line: click only. Each command parses, validates and calls the library."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ser.errors import SerError

class RegistryChoice(click.Choice):
    """A ``click.Choice`` whose values are a library registry's names (``module.ATTR``: a dict's
    keys or a tuple), read the first time click needs them. The CLI never retypes a list, and
    ``ser --help`` or ``ser info`` do not import torch to build options they do not use."""

    def __init__(self, module: str, attr: str) -> None:
        # not click.Choice.__init__: it would read the choices now
        self._source = (module, attr)
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._choices is None:
            module, attr = self._source
            self._choices = tuple(getattr(importlib.import_module(module), attr))
        return self._choices


MODEL_CHOICE = RegistryChoice("ser.training.models", "MODELS")
DEVICE_CHOICE = RegistryChoice("ser.training.device", "DEVICES")


def _friendly_errors(fn: Callable) -> Callable:
    """Turn the project's domain errors into a one-line message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SerError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _csv_ints(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="ser-toolkit")
def main() -> None:
    """Speech emotion recognition: a precomputed feature store plus a batch trainer."""


# -- featurize ---------------------------------------------------------------------------------
@main.command("featurize", context_settings={"show_default": True})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path("AudioWAV"),
              help="Audio folder (CREMA-D's is AudioWAV).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("feats.h5"),
              help="Store to write (resumed if it exists).")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              help="Worker processes.")
@click.option("--dataset", type=RegistryChoice("ser.corpus.scan", "DATASETS"), default="auto", help="Corpus layout.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns path,emotion[,speaker] (implies --dataset manifest).")
@click.option("--allow-absolute-paths", is_flag=True, help="Let manifest paths leave the manifest's folder.")
@click.option("--speaker-regex", default=None, metavar="REGEX",
              help="--dataset folders: regex searched in each file name (without extension); its group "
                   "(?P<speaker>...), else its first group, is the speaker, e.g. '^([A-Za-z]+\\d+)_'.")
@click.option("--demographics", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CREMA-D: VideoDemographics.csv to join actor sex and age from, when it is not beside the audio.")
@click.option("--emotions", default=None, help="Keep only these codes, e.g. ANG,DIS,FEA,HAP,NEU,SAD.")
@click.option("--split", "split_method", type=click.Choice(["random", "speaker"]), default="random",
              help="Split over clips (stratified) or over speakers.")
@click.option("--seed", type=int, default=42)
@click.option("--test-size", type=click.FloatRange(0, 1), default=0.3)
@click.option("--val-size", type=click.FloatRange(0, 1, max_open=True), default=0.05)
@click.option("--augment", default="noise,stretch,shift,pitch", help="Training-clip augmentations, or none.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=4.0,
              help="Clips are cut to this length; the mel spectrogram is padded to it.")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=16000)
@click.option("--n-mels", type=click.IntRange(min=8), default=64, help="Mel bands of the 2D spectrogram.")
@click.option("--n-fft", type=click.IntRange(min=64), default=1024)
@click.option("--hop-length", type=click.IntRange(min=16), default=256)
@click.option("--stats", default="mean", help="Frame statistics of the descriptors: mean or mean,std.")
@click.option("--extras", default="none",
              help="Extra descriptor groups: prosody (pitch, loudness), dynamics (MFCC deltas, flux), "
                   "compare (openSMILE's ComParE-2016 functionals; pip install opensmile), or none.")
@click.option("--backend", type=RegistryChoice("ser.featurize.backends", "BACKENDS"),
              default="loky", help="joblib backend for the workers: local processes, or a Dask/Ray cluster.")
@click.option("--scheduler", default=None,
              help="dask: scheduler address (tcp://host:8786); ray: cluster address (ray://host:10001 or auto). "
                   "Without it a local cluster of --workers processes is started.")
@click.option("--overwrite", is_flag=True, help="Start the store over instead of resuming it.")
@click.option("--progress/--no-progress", default=True)
@_friendly_errors
def featurize_cmd(data: Path, out: Path, workers: int, dataset: str, manifest: Path | None,
                  allow_absolute_paths: bool, speaker_regex: str | None, demographics: Path | None,
                  emotions: str | None, split_method: str, seed: int,
                  test_size: float, val_size: float, augment: str, max_seconds: float, sample_rate: int,
                  n_mels: int, n_fft: int, hop_length: int, stats: str, extras: str, backend: str, scheduler: str | None, overwrite: bool,
                  progress: bool) -> None:
    """Scan, split, augment and extract both feature families into one HDF5 store."""
    from ser.audio.augment import parse_augment
    from ser.features.config import FeatureConfig
    from ser.featurize.job import FeaturizeConfig, featurize
    from ser.corpus.labels import parse_emotions
    from ser.corpus.splits import SplitConfig

    if manifest is not None:
        dataset = "manifest"
        if data == Path("AudioWAV") and not data.exists():
            data = manifest.parent
    if not data.is_dir() and dataset != "manifest":
        raise SerError(f"--data {data}: no such folder")
    cfg = FeaturizeConfig(
        data=data, out=out, dataset=dataset, manifest=manifest, emotions=parse_emotions(emotions),
        augment=parse_augment(augment),
        features=FeatureConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                               max_seconds=max_seconds, n_mels=n_mels,
                               stats=tuple(s.strip() for s in stats.split(",") if s.strip()),
                               extras=tuple(e.strip() for e in extras.split(",") if e.strip() and e.strip() != "none")),
        split=SplitConfig(method=split_method, test_size=test_size, val_size=val_size, seed=seed),
        workers=workers, backend=backend, scheduler=scheduler, overwrite=overwrite, allow_absolute=allow_absolute_paths,
        speaker_regex=speaker_regex, demographics=demographics,
    )
    summary = featurize(cfg, progress=progress)
    # every written clip has exactly one original ("none") row; failures also count skipped names
    n_written = int(summary.counts["none"].sum()) if "none" in summary.counts else 0
    click.echo(f"wrote {summary.store}: {summary.n_rows} rows from {n_written} "
               f"clips in {summary.seconds:.1f} s")
    if len(summary.counts):
        click.echo(summary.counts.to_string())
    if summary.n_failures:
        shown = 10
        for row in summary.failures.head(shown).itertuples():
            where, sep, why = str(row.reason).partition(": ")  # audio errors start with the full path
            click.echo(f"  skipped {row.path}: {why if sep and where.endswith(str(row.path)) else row.reason}",
                       err=True)
        if summary.n_failures > shown:
            click.echo(f"  ... and {summary.n_failures - shown} more", err=True)
        click.echo(f"{summary.n_failures} file(s) could not be used; see `ser info {summary.store}` "
                   f"or pd.read_hdf('{summary.store}', 'failures')", err=True)
    if summary.n_rows == 0:
        raise SerError(f"no clip could be featurized ({summary.n_failures} failures); "
                       f"see `ser info {summary.store}`")


# -- info --------------------------------------------------------------------------------------
@main.command("info")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--failures", "max_failures", type=int, default=20, help="Failures to list.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Read every block and check its checksum (a damaged store is reported, not described).")
@_friendly_errors
def info_cmd(store: Path, max_failures: int, verify: bool) -> None:
    """What a store holds: counts, feature config, failures. Read-only, also while featurize writes it."""
    from ser.report.info import describe_store

    click.echo(describe_store(store, max_failures=max_failures, verify=verify))


def featurize_main() -> None:
    """Console script ``featurize`` (same as ``ser featurize``)."""
    featurize_cmd(prog_name="featurize")


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user typed this option (not its default)."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE


def _fused_preset(ctx: click.Context, preset: str | None, store_path: Path, allowed: tuple[str, ...]) -> bool:
    """Whether ``preset`` fuses member presets; such a preset takes only the ``allowed`` options."""
    from ser.experiments.presets import check_store, get_preset
    from ser.store import read_attrs

    if preset is None or not get_preset(preset).members:
        return False
    typed = [p.opts[0] for p in ctx.command.params
             if p.name not in allowed and p.name != "preset" and _given(ctx, p.name)]
    if typed:
        names = ", ".join(m.name for m in get_preset(preset).members)
        raise click.UsageError(f"--preset {preset} trains its members ({names}) as their own presets say; "
                               f"leave out {', '.join(typed)}")
    if store_path.exists():
        check_store(preset, read_attrs(store_path)["feature_config"], str(store_path))
    return True


def _train_config(ctx: click.Context, *, preset: str | None, store_path: Path, model: str,
                  hparams: dict[str, Any], **fields: Any):
    """A TrainConfig from the options, starting from ``preset`` when given: options the user
    typed override the preset, defaults do not."""
    from ser.experiments.presets import check_store, get_preset
    from ser.store import read_attrs
    from ser.training.loop import TrainConfig

    if preset is None:
        return TrainConfig(model=model, hparams=hparams, **fields)
    base = dict(get_preset(preset).train)
    if _given(ctx, "model") and model != base["model"]:
        raise click.UsageError(f"--preset {preset} trains {base['model']}; leave out --model {model}")
    hp = dict(base.pop("hparams", {}))
    hp.update({k: v for k, v in hparams.items() if v is not None})
    merged = {**{k: v for k, v in fields.items() if _given(ctx, k)}}
    cfg = TrainConfig(**{**base, **merged, "hparams": hp})
    if store_path.exists():
        check_store(preset, read_attrs(store_path)["feature_config"], str(store_path))
    return cfg


def _model_options(fn: Callable) -> Callable:
    """Options shared by train and crossval: optimisation, model hyper-parameters, presets."""
    options = [
        click.option("--optimizer", type=RegistryChoice("ser.training.loop", "OPTIMIZERS"), default="adam"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3),
        click.option("--batch-size", type=click.IntRange(min=2), default=64),
        click.option("--seed", type=int, default=42),
        click.option("--C", "c_value", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="svm/logreg: inverse regularisation strength."),
        click.option("--filters", default=None, help="cnn2d: filters per block, e.g. 128,128,64,64,32."),
        click.option("--kernels", default=None, help="cnn2d: kernel per block, e.g. 1x3,3x5,3x5,3x3,3x3."),
        click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None),
        click.option("--pooling", type=RegistryChoice("ser.training.models", "POOLINGS"), default=None,
                     help="cnn2d: global average/max pooling, or the study's flatten."),
        click.option("--batch-norm/--no-batch-norm", default=None, help="cnn2d: BatchNorm after each conv."),
        click.option("--spec-augment/--no-spec-augment", default=False,
                     help="cnn2d: time/frequency masks at train time."),
        click.option("--mixup", type=click.FloatRange(min=0), default=0.0, help="Mixup alpha (0: off)."),
        click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0),
        click.option("--schedule", type=RegistryChoice("ser.training.loop", "SCHEDULES"), default="constant",
                     help="Learning rate over the epochs: constant, or a cosine from --lr towards 0."),
        click.option("--variants", type=RegistryChoice("ser.training.loop", "VARIANTS"), default="all",
                     help="Each epoch trains on every row of a clip (original and augmented copies), or on "
                          "one of them at random."),
        click.option("--time-pool", type=click.IntRange(min=1), default=None,
                     help="cnn2d/tdnn: average this many mel frames together before the first layer."),
        click.option("--channels", type=click.IntRange(min=1), default=None,
                     help="tdnn: channels of its convolutions."),
        click.option("--device", type=DEVICE_CHOICE, default="auto"),
        click.option("--select", type=RegistryChoice("ser.training.loop", "SELECT_METRICS"), default="uar",
                     help="The validation score that picks the best epoch, early stopping and a sweep's winner."),
        click.option("--speaker-norm/--no-speaker-norm", default=False,
                     help="Standardise each speaker's features by that speaker's own clips (no labels used)."),
        click.option("--preset", type=RegistryChoice("ser.experiments.presets", "PRESETS"), default=None,
                     help="A named recipe (see README); options you type override it."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _hparams(ctx: click.Context, *, model: str, preset: str | None, c_value: float | None, filters: str | None,
             kernels: str | None, dropout: float | None, pooling: str | None, batch_norm: bool | None,
             time_pool: int | None = None, channels: int | None = None) -> dict[str, Any]:
    """The model hyper-parameters the user typed, checked against the model they apply to
    (the hyper-parameters each model's registry entry parses)."""
    from ser.training.models import MODELS

    given = {k: v for k, v in {"filters": filters, "kernels": kernels, "dropout": dropout, "pooling": pooling,
                               "batch_norm": batch_norm, "C": c_value, "time_pool": time_pool,
                               "channels": channels}.items()
             if v is not None}
    if preset is not None and not _given(ctx, "model"):
        return given  # the preset's model decides; TrainConfig rejects what does not fit it
    for key in given:
        if key not in MODELS[model].parse:
            owners = [name for name, spec in MODELS.items() if key in spec.parse]
            raise click.UsageError(f"--{key.replace('_', '-')} applies to {' and '.join(owners)} only")
    return given


# -- train -------------------------------------------------------------------------------------
def _memory_budget(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--memory-budget``: ``auto`` (None) or a size such as ``512MB``, in bytes."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    from ser.training.data import parse_size

    try:
        return parse_size(value)
    except SerError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("train", context_settings={"show_default": True})
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("feats.h5"))
@click.option("--model", type=MODEL_CHOICE, default="cnn1d",
              help="cnn1d/cnn2d: the CNNs; svm/logreg: scikit-learn baselines on the descriptors.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<model>-<time>].")
@click.option("--epochs", type=click.IntRange(min=1), default=100)
@click.option("--patience", type=click.IntRange(min=0), default=20,
              help="Stop after this many epochs without a better validation score (--select; 0: never).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0)
@click.option("--sweep", "sweeps", multiple=True,
              help="KEY=V1,V2 (repeatable): train the grid, e.g. optimizer=adam,sgd,rmsprop; "
                   "separate values that contain commas with |.")
@click.option("--memory-budget", "memory_budget", default="auto", callback=_memory_budget,
              help="Most memory the input data may hold, e.g. 512MB, 2GB, 1.5GiB; a training split "
                   "larger than this streams from the store in chunks. auto: half the free GPU memory "
                   "on CUDA, half the available RAM on CPU.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last.pt (same arguments; --epochs may grow); "
                   "on the CPU the result equals an uninterrupted run's.")
@_model_options
@click.pass_context
@_friendly_errors
def train_cmd(ctx: click.Context, store_path: Path, model: str, out: Path | None, optimizer: str, lr: float,
              epochs: int, batch_size: int, seed: int, patience: int, weight_decay: float, filters: str | None,
              kernels: str | None, dropout: float | None, pooling: str | None, batch_norm: bool | None,
              spec_augment: bool, mixup: float, sweeps: tuple[str, ...], device: str,
              c_value: float | None, memory_budget: int | None = None, resume: bool = False,
              speaker_norm: bool = False, preset: str | None = None, select: str = "uar",
              label_smoothing: float = 0.0, schedule: str = "constant", variants: str = "all",
              time_pool: int | None = None, channels: int | None = None) -> None:
    """Train a model (or a grid with --sweep) from the store; writes best.pt, last.pt, history, curves."""
    import time

    from ser.audio.decode import refuse_audio_overwrite

    if _fused_preset(ctx, preset, store_path, ("store_path", "out", "device", "seed", "memory_budget")):
        from ser.experiments.fusion import train_fused

        out = out or Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        refuse_audio_overwrite(out)
        fused = train_fused(store_path, preset, out, device=device, seed=seed if _given(ctx, "seed") else None,
                            memory_budget_bytes=memory_budget)
        click.echo(f"checkpoint: {out / 'best.pt'} ({fused.model_name})")
        return
    hparams = _hparams(ctx, model=model, preset=preset, c_value=c_value, filters=filters, kernels=kernels,
                       dropout=dropout, pooling=pooling, batch_norm=batch_norm, time_pool=time_pool,
                       channels=channels)
    cfg = _train_config(ctx, preset=preset, store_path=store_path, model=model, hparams=hparams,
                        optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                        patience=patience, weight_decay=weight_decay, spec_augment=spec_augment, mixup=mixup,
                        speaker_norm=speaker_norm, select=select, label_smoothing=label_smoothing,
                        schedule=schedule, variants=variants)
    model = cfg.model
    if resume and out is None:
        raise click.UsageError("--resume needs the --out folder of the run to continue")
    out = out or Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    refuse_audio_overwrite(out)
    if sweeps:
        _train_sweep(store_path, cfg, sweeps, out, device=device, memory_budget=memory_budget, resume=resume)
    else:
        _train_one(store_path, cfg, out, device=device, memory_budget=memory_budget, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 alone reports
        click.echo(f"checkpoint: {out / 'best.pt'}")


def _train_one(store_path: Path, cfg: Any, out: Path, *, device: str, memory_budget: int | None,
               resume: bool) -> None:
    """Train one config (data-parallel under torchrun), then draw curves.png and report the best epoch."""
    import math

    from ser.report.runs import draw_curves
    from ser.training.loop import train

    result = train(store_path, cfg, out, device=device, memory_budget_bytes=memory_budget, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 alone wrote history.csv
        return
    draw_curves(out)
    if math.isnan(result.history[-1]["val_accuracy"]):  # no validation rows: the score is train's
        click.echo(f"epoch {result.best_epoch} kept (no validation rows; train accuracy "
                   f"{result.best_val_accuracy:.4f}) ({result.seconds:.0f} s)")
    else:
        click.echo(f"best epoch {result.best_epoch} (by val {cfg.select}): val UAR {result.best_val_uar:.4f}, "
                   f"accuracy {result.best_val_accuracy:.4f}, macro-F1 {result.best_val_macro_f1:.4f} "
                   f"({result.seconds:.0f} s)")


def _train_sweep(store_path: Path, cfg: Any, sweeps: tuple[str, ...], out: Path, *, device: str,
                 memory_budget: int | None, resume: bool) -> None:
    """Train the --sweep grid, drawing each run's figures as it ends; print the results table."""
    from ser.experiments.sweep import parse_sweep, run_sweep
    from ser.report.runs import draw_run

    run_sweep(store_path, cfg, parse_sweep(sweeps), out, device=device, memory_budget_bytes=memory_budget,
              resume=resume, after_run=draw_run)
    click.echo((out / "results.md").read_text())


# -- evaluate ----------------------------------------------------------------------------------
@main.command("evaluate", context_settings={"show_default": True})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Store to evaluate on [default: the one the checkpoint was trained on].")
@click.option("--split", type=RegistryChoice("ser.corpus.splits", "SPLITS"), default="test")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write metrics.json, predictions.csv, confusion.png [default: eval-<split> beside the checkpoint].")
@click.option("--device", type=DEVICE_CHOICE, default="auto")
@click.option("--label-map", default=None,
              help="Fold or drop the store's labels before scoring, e.g. CAL=NEU,SUR=drop (another corpus's labels).")
@click.option("--report", is_flag=True,
              help="Also write report.html: scores, confusion and players for the most-confused pairs' clips.")
@_friendly_errors
def evaluate_cmd(checkpoint: Path, store_path: Path | None, split: str, out: Path | None, device: str,
                 label_map: str | None, report: bool) -> None:
    """Accuracy, UAR, F1 (micro/macro/weighted), confusion matrix and most-confused classes."""
    from ser.audio.decode import refuse_audio_overwrite
    from ser.evaluation.evaluator import evaluate, parse_label_map
    from ser.evaluation.metrics import format_metrics
    from ser.report.runs import draw_confusion

    out = out or checkpoint.parent / f"eval-{split}"
    refuse_audio_overwrite(out)
    if out.exists() and not out.is_dir():
        raise SerError(f"--out {out} exists and is not a folder")
    result = evaluate(checkpoint, store=store_path, split=split, out_dir=out, device=device,
                      label_map=parse_label_map(label_map))
    draw_confusion(out, result.metrics)
    click.echo(format_metrics(result.metrics))
    click.echo(f"\nwrote {out}/metrics.json, predictions.csv, confusion.png")
    if report:
        from ser.report.evaluation_page import write_evaluation_page

        page = write_evaluation_page(out, checkpoint=checkpoint)
        click.echo(f"wrote {page}; open it in a browser: {page.resolve().as_uri()}")


@main.command("report", context_settings={"show_default": True})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The evaluated checkpoint, for its training curves [default: the one metrics.json names].")
@click.option("--clips", "clips_per_pair", type=click.IntRange(min=0), default=3,
              help="Clips shown per most-confused pair.")
@click.option("--seed", type=int, default=42, help="Seed of the clip picks.")
@_friendly_errors
def report_cmd(run_dir: Path, checkpoint: Path | None, clips_per_pair: int, seed: int) -> None:
    """An evaluation to listen to: scores, confusion, clips of the most-confused pairs (offline HTML).

    RUN_DIR is an evaluation folder (what evaluate --out wrote) or a run folder holding
    evaluation folders (eval-test, ...): each gets its report.html.
    """
    from ser.report.evaluation_page import evaluation_dirs, write_evaluation_page

    for eval_dir in evaluation_dirs(run_dir):
        page = write_evaluation_page(eval_dir, checkpoint=checkpoint, clips_per_pair=clips_per_pair, seed=seed)
        click.echo(f"wrote {page}; open it in a browser: {page.resolve().as_uri()}")


# -- predict -----------------------------------------------------------------------------------
@main.command("predict")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the predictions here as CSV: path, the manifest's columns, emotion, p_<label> per "
                   "label, error (empty on success).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes that decode and extract the features (the model runs in this one).")
@click.option("--speaker-from", default=None, metavar="regex:PATTERN|column:NAME",
              help="For checkpoints trained with --speaker-norm: each file's speaker, from its name (the "
                   "group named 'speaker', else the first) or a manifest column; each speaker's files are "
                   "standardised by their own statistics [default: all the files are one speaker's].")
@click.option("--device", type=DEVICE_CHOICE, default="cpu", show_default=True)
@click.option("--progress/--no-progress", default=True, help="A progress bar on stderr.")
@_friendly_errors
def predict_cmd(checkpoint: Path, sources: tuple[str, ...], out: Path | None, as_json: bool, workers: int,
                speaker_from: str | None, device: str, progress: bool) -> None:
    """Emotion and class probabilities for audio FILES, folders (recursive), manifest CSVs (a path
    column, relative to the CSV) or - (paths on stdin, one a line).

    A file that cannot be read gets its reason and the others go on; the exit status is non-zero
    only when no file could be predicted.
    """
    import json

    from ser.evaluation.predict import (check_out, describe, json_record, labels_of, predict_paths,
                                        write_predictions)

    if out is not None:
        check_out(out, sources)
    frame = predict_paths(checkpoint, sources, workers=workers, speaker_from=speaker_from, progress=progress,
                          device=device, stdin=click.get_text_stream("stdin"))
    labels, rows = labels_of(frame), frame.to_dict("records")
    if out is not None:
        write_predictions(frame, out)
    for row in rows:
        if as_json:
            click.echo(json.dumps(json_record(row, labels)))
        elif out is None:
            click.echo(describe(row, labels), err=bool(row["error"]))
    n_ok = sum(not row["error"] for row in rows)
    if out is not None:
        click.echo(f"wrote {out}: {n_ok} of {len(rows)} file(s) predicted, {len(rows) - n_ok} with an error",
                   err=True)
    if n_ok == 0:
        raise SerError(f"no file could be predicted ({len(rows)} given; see the error of each)")


# -- export ------------------------------------------------------------------------------------
@main.command("export", context_settings={"show_default": True})
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="A checkpoint (best.pt) or a fusion (ser fuse).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The ONNX file to write; its JSON sidecar goes beside it (model.onnx -> model.json).")
@click.option("--check/--no-check", default=True,
              help="Run the written graph in onnxruntime (when installed) and refuse it unless it matches torch.")
@_friendly_errors
def export_cmd(checkpoint: Path, onnx_path: Path, check: bool) -> None:
    """Write a model as ONNX (class probabilities) plus a JSON sidecar, to run with onnxruntime alone.

    See docs/export.md for the inputs the graph expects and how to compute them without torch.
    """
    from ser.evaluation.export import export_onnx, read_sidecar, sidecar_path

    out = export_onnx(checkpoint, onnx_path, check=check)
    side = read_sidecar(out)
    for spec in side["inputs"]:
        shape = ", ".join("batch" if d is None else str(d) for d in spec["shape"])
        note = "  (standardise each speaker's rows first: see the sidecar)" if spec["speaker_norm"] else ""
        click.echo(f"input {spec['name']}: float32 ({shape}){note}")
    click.echo(f"output probabilities: ({len(side['labels'])} classes: {', '.join(side['labels'])})")
    checked = side["checked_with_onnxruntime"]
    click.echo(f"checked against torch with onnxruntime {checked}" if checked else
               "not checked (install onnxruntime, or drop --no-check, to compare with torch)")
    click.echo(f"wrote {out}, {sidecar_path(out)}")


def train_main() -> None:
    """Console script ``train`` (same as ``ser train``)."""
    train_cmd(prog_name="train")


def evaluate_main() -> None:
    """Console script ``evaluate`` (same as ``ser evaluate``)."""
    evaluate_cmd(prog_name="evaluate")


# -- demo --------------------------------------------------------------------------------------
@main.command("demo", context_settings={"show_default": True})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("ser-demo"))
@click.option("--epochs", type=click.IntRange(min=1), default=6)
@click.option("--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1))
@click.option("--seed", type=int, default=42)
@click.option("--explore/--no-explore", default=True, help="Also write the exploration report.")
@_friendly_errors
def demo_cmd(out: Path, epochs: int, workers: int, seed: int, explore: bool) -> None:
    """The whole flow on a generated synthetic CREMA-D-style corpus (CPU, a few minutes)."""
    from ser.experiments.demo import DemoConfig
    from ser.report.demo import demo

    result = demo(DemoConfig(out=out, epochs=epochs, workers=workers, seed=seed, explore=explore))
    m = result.metrics
    click.echo(f"demo test accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f}, macro-F1 {m['f1_macro']:.3f} "
               f"(synthetic corpus, chance 0.167) in {result.seconds:.0f} s; results in {out}")


# -- explore -----------------------------------------------------------------------------------
@main.command("explore", context_settings={"show_default": True})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Audio folder to explore [default: ./AudioWAV when neither --data nor --store is given].")
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Feature store: adds descriptor and mel plots per emotion (and, alone, its clips).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              help="Report folder: index.html, PNGs and audio/.")
@click.option("--dataset", type=RegistryChoice("ser.corpus.scan", "DATASETS"), default="auto", help="Corpus layout.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns path,emotion[,speaker] (implies --dataset manifest).")
@click.option("--samples", type=click.IntRange(min=0), default=2, help="Sample clips per emotion.")
@click.option("--seed", type=int, default=42, help="Seed of the sample picks.")
@_friendly_errors
def explore_cmd(data: Path | None, store_path: Path | None, out: Path, dataset: str,
                manifest: Path | None, samples: int, seed: int) -> None:
    """Class balance, durations, waveform and STFT per emotion, and players: an offline HTML page."""
    from ser.report.explore import explore

    if data is None and store_path is None and manifest is None:
        if not Path("AudioWAV").is_dir():
            raise click.UsageError("give --data DIR (an audio folder) or --store FILE (a feature store)")
        data = Path("AudioWAV")
    if data is not None and not data.is_dir():
        raise SerError(f"--data {data}: no such folder")
    index = explore(out, data=data, store=store_path, dataset=dataset, samples=samples, seed=seed,
                    manifest=manifest)
    click.echo(f"wrote {index}; open it in a browser: {index.resolve().as_uri()}")


# -- crossval ----------------------------------------------------------------------------------
@main.command("crossval", context_settings={"show_default": True})
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("feats.h5"))
@click.option("--model", type=MODEL_CHOICE, default="svm")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Speaker folds [default: one per speaker, leave-one-speaker-out].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder [default: runs/crossval-<model>-<time>].")
@click.option("--epochs", type=click.IntRange(min=1), default=30)
@click.option("--augmented/--no-augmented", default=True,
              help="Train on the augmented copies too, or on original clips only (to measure augmentation).")
@click.option("--fold-seed", type=int, default=None,
              help="Seed of the speaker folds [default: --seed], to score models of other seeds on the same folds.")
@_model_options
@click.pass_context
@_friendly_errors
def crossval_cmd(ctx: click.Context, store_path: Path, model: str, folds: int | None, out: Path | None,
                 epochs: int, augmented: bool, fold_seed: int | None, optimizer: str, lr: float, batch_size: int,
                 seed: int, c_value: float | None, filters: str | None, kernels: str | None, dropout: float | None,
                 pooling: str | None, batch_norm: bool | None, spec_augment: bool, mixup: float, device: str,
                 speaker_norm: bool, preset: str | None, select: str, label_smoothing: float, schedule: str,
                 variants: str, time_pool: int | None, channels: int | None) -> None:
    """Speaker-independent cross-validation: leave-speakers-out folds over the whole store.

    Featurize with --split speaker --test-size 0 --val-size 0 so every clip has its augmented
    copies; held-out speakers are tested on their original clips only.
    """
    import time

    from ser.experiments.crossval import crossval
    from ser.report.runs import draw_confusion, draw_curves

    if _fused_preset(ctx, preset, store_path, ("store_path", "out", "device", "seed", "folds")):
        from ser.experiments.fusion import crossval_fused

        out = out or Path("runs") / f"crossval-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        m = crossval_fused(store_path, preset, out, folds=folds, device=device,
                           seed=seed if _given(ctx, "seed") else None, after_fold=draw_curves)
        draw_confusion(out, m)
        _echo_crossval(m)
        click.echo(f"wrote {out}/<member>/ (each member's folds) and the fusion's folds.csv, metrics.json, "
                   "predictions.csv, confusion.png")
        return
    hparams = _hparams(ctx, model=model, preset=preset, c_value=c_value, filters=filters, kernels=kernels,
                       dropout=dropout, pooling=pooling, batch_norm=batch_norm, time_pool=time_pool,
                       channels=channels)
    cfg = _train_config(ctx, preset=preset, store_path=store_path, model=model, hparams=hparams,
                        optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
                        spec_augment=spec_augment, mixup=mixup, speaker_norm=speaker_norm, select=select,
                        label_smoothing=label_smoothing, schedule=schedule, variants=variants)
    model = cfg.model
    out = out or Path("runs") / f"crossval-{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = crossval(store_path, cfg, out, folds=folds, device=device, augmented=augmented, fold_seed=fold_seed,
                   after_fold=draw_curves)
    draw_confusion(out, res.metrics)
    click.echo(res.folds.to_string(index=False))
    _echo_crossval(res.metrics)
    click.echo(f"wrote {out}/folds.csv, metrics.json, predictions.csv, confusion.png")


def _echo_crossval(m: dict[str, Any]) -> None:
    click.echo(f"\n{m['split']}: UAR {m['fold_uar_mean']:.4f} ± {m['fold_uar_std']:.4f}, accuracy "
               f"{m['fold_accuracy_mean']:.4f} ± {m['fold_accuracy_std']:.4f}, macro-F1 {m['fold_f1_macro_mean']:.4f} "
               f"± {m['fold_f1_macro_std']:.4f} (mean ± std over folds); pooled over all held-out clips: UAR "
               f"{m['uar']:.4f}, accuracy {m['accuracy']:.4f}, macro-F1 {m['f1_macro']:.4f}")


@main.command("fuse", context_settings={"show_default": True})
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--weights", default=None, help="One weight per source, e.g. 0.5,0.5 [default: equal].")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Crossval folders in: a folder of fused cross-validated metrics. Checkpoints in: fused.pt.")
@_friendly_errors
def fuse_cmd(sources: tuple[Path, ...], weights: str | None, out: Path) -> None:
    """Average the class probabilities of several models (late fusion).

    Given crossval folders (the same store, --folds and fold seed), scores the fusion on their
    held-out clips; given checkpoints (trained on the same store), writes one fused model that
    evaluate and predict take like a checkpoint.
    """
    w = _float_list(weights, "--weights") if weights else None
    if all(p.is_dir() for p in sources):
        from ser.experiments.fusion import fuse_crossvals

        _echo_crossval(fuse_crossvals(sources, out, w))
        click.echo(f"wrote {out}/folds.csv, metrics.json, predictions.csv")
    elif not any(p.is_dir() for p in sources):
        from ser.training.fusion import save_fusion

        fused = save_fusion(out, sources, w)
        click.echo(f"wrote {out}: {fused.model_name}, weights {', '.join(f'{v:.3g}' for v in fused.weights)}")
    else:
        raise click.UsageError("give crossval folders or checkpoints, not both")


def _float_list(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None
