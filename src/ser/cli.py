"""The command line: click only. Each command parses, validates and calls the library."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import SerError

DATASETS = ["auto", "cremad", "emodb", "ravdess", "tess", "savee", "manifest"]


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
@click.option("--dataset", type=click.Choice(DATASETS), default="auto", help="Corpus layout.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CSV with columns path,emotion[,speaker] (implies --dataset manifest).")
@click.option("--allow-absolute-paths", is_flag=True, help="Let manifest paths leave the manifest's folder.")
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
@click.option("--backend", type=click.Choice(["loky", "multiprocessing", "threading"]), default="loky",
              help="joblib backend for the workers.")
@click.option("--overwrite", is_flag=True, help="Start the store over instead of resuming it.")
@click.option("--progress/--no-progress", default=True)
@_friendly_errors
def featurize_cmd(data: Path, out: Path, workers: int, dataset: str, manifest: Path | None,
                  allow_absolute_paths: bool, emotions: str | None, split_method: str, seed: int,
                  test_size: float, val_size: float, augment: str, max_seconds: float, sample_rate: int,
                  n_mels: int, n_fft: int, hop_length: int, stats: str, backend: str, overwrite: bool,
                  progress: bool) -> None:
    """Scan, split, augment and extract both feature families into one HDF5 store."""
    from .augment import parse_augment
    from .features import FeatureConfig
    from .featurize import FeaturizeConfig, featurize
    from .labels import parse_emotions
    from .splits import SplitConfig

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
                               stats=tuple(s.strip() for s in stats.split(",") if s.strip())),
        split=SplitConfig(method=split_method, test_size=test_size, val_size=val_size, seed=seed),
        workers=workers, backend=backend, overwrite=overwrite, allow_absolute=allow_absolute_paths,
    )
    summary = featurize(cfg, progress=progress)
    click.echo(f"wrote {summary.store}: {summary.n_rows} rows from {summary.n_clips - summary.n_failures} "
               f"clips in {summary.seconds:.1f} s")
    if len(summary.counts):
        click.echo(summary.counts.to_string())
    if summary.n_failures:
        click.echo(f"{summary.n_failures} file(s) could not be used; see `ser info {summary.store}` "
                   f"or pd.read_hdf('{summary.store}', 'failures')", err=True)
    if summary.n_rows == 0:
        raise SerError(f"no clip could be featurized ({summary.n_failures} failures); "
                       f"see `ser info {summary.store}`")


# -- info --------------------------------------------------------------------------------------
@main.command("info")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--failures", "max_failures", type=int, default=20, help="Failures to list.")
@_friendly_errors
def info_cmd(store: Path, max_failures: int) -> None:
    """What a store holds: counts, feature config, failures."""
    from .inspect import describe_store

    click.echo(describe_store(store, max_failures=max_failures))


def featurize_main() -> None:
    """Console script ``featurize`` (same as ``ser featurize``)."""
    featurize_cmd(prog_name="featurize")
