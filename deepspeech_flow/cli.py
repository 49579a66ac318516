"""`deepspeech-flow`: DeepSpeech.py's flags, run as the train-cv Prefect flow.

Every DeepSpeech flag is accepted as written (`--train_files`) and dashed
(`--train-files`). Stage commands run that stage and whatever it needs that earlier
runs did not leave behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from deepspeech_flow.settings import apply_defaults

apply_defaults()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train DeepSpeech models with an orchestrated, resumable Prefect pipeline.",
)


def _opt(*names: str, help: str):  # noqa: A002 - typer's keyword
    flags = []
    for name in names:
        flags.append(f"--{name}")
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
    return typer.Option(*flags, help=help, show_default=False)


Corpus = Annotated[Path | None, _opt("corpus", help="Common Voice locale dir (clips/ + tsv).")]
Workdir = Annotated[Path | None, _opt("workdir", help="Work directory [./deepspeech-data].")]


def _stage_command(target: str, reuse_trained_model: bool):
    def command(
        corpus: Corpus = None,
        train_files: Annotated[
            str | None, _opt("train_files", help="Training CSV(s), comma-separated.")
        ] = None,
        dev_files: Annotated[
            str | None, _opt("dev_files", help="Dev CSV(s), comma-separated.")
        ] = None,
        test_files: Annotated[
            str | None, _opt("test_files", help="Test CSV(s), comma-separated.")
        ] = None,
        workdir: Workdir = None,
        checkpoint_dir: Annotated[
            Path | None, _opt("checkpoint_dir", help="[WORKDIR/checkpoints]")
        ] = None,
        export_dir: Annotated[Path | None, _opt("export_dir", help="[WORKDIR/export]")] = None,
        config: Annotated[Path | None, _opt("config", help="YAML file filling the config.")] = None,
        alphabet_config_path: Annotated[
            Path | None, _opt("alphabet_config_path", help="alphabet.txt")
        ] = None,
        n_hidden: Annotated[int | None, _opt("n_hidden", help="Layer width [2048].")] = None,
        epochs: Annotated[int | None, _opt("epochs", help="Epochs [75].")] = None,
        train_batch_size: Annotated[int | None, _opt("train_batch_size", help="[1]")] = None,
        dev_batch_size: Annotated[int | None, _opt("dev_batch_size", help="[1]")] = None,
        test_batch_size: Annotated[int | None, _opt("test_batch_size", help="[1]")] = None,
        learning_rate: Annotated[
            float | None, _opt("learning_rate", help="Adam learning rate [0.001].")
        ] = None,
        dropout_rate: Annotated[float | None, _opt("dropout_rate", help="[0.05]")] = None,
        seed: Annotated[int | None, _opt("seed", "random_seed", help="Random seed [4568].")] = None,
        checkpoint_steps: Annotated[
            int | None, _opt("checkpoint_steps", help="Checkpoint every N steps [500].")
        ] = None,
        checkpoint_secs: Annotated[
            int | None, _opt("checkpoint_secs", help="...and every N seconds [600].")
        ] = None,
        max_duration: Annotated[
            float | None, _opt("max_duration", help="Reject clips longer than this [10 s].")
        ] = None,
        task_runner: Annotated[
            str | None, _opt("task_runner", help="Feature shards on: threads|processes|dask.")
        ] = None,
        dask_address: Annotated[
            str | None, _opt("dask_address", help="Dask scheduler (tcp://host:8786).")
        ] = None,
        shard_size: Annotated[
            int | None, _opt("shard_size", help="Clips per shard [2000].")
        ] = None,
        augment: Annotated[
            list[str] | None,
            _opt("augment", help="DeepSpeech augmentation, repeatable: 'time_mask[p=0.5,n=2]'."),
        ] = None,
        train_retries: Annotated[
            int | None, _opt("train_retries", help="Retries of the train stage [3].")
        ] = None,
    ) -> None:
        from deepspeech_flow.config_loading import build_config, split_files

        flags = {
            "corpus": corpus,
            "train_files": split_files(train_files),
            "dev_files": split_files(dev_files),
            "test_files": split_files(test_files),
            "workdir": workdir,
            "checkpoint_dir": checkpoint_dir,
            "export_dir": export_dir,
            "alphabet_config_path": alphabet_config_path,
            "n_hidden": n_hidden,
            "epochs": epochs,
            "train_batch_size": train_batch_size,
            "dev_batch_size": dev_batch_size,
            "test_batch_size": test_batch_size,
            "learning_rate": learning_rate,
            "dropout_rate": dropout_rate,
            "seed": seed,
            "checkpoint_steps": checkpoint_steps,
            "checkpoint_secs": checkpoint_secs,
            "max_duration": max_duration,
            "train_retries": train_retries,
            "augment": augment or None,
            "task_runner": task_runner,
            "dask_address": dask_address,
            "shard_size": shard_size,
        }
        try:
            cfg = build_config(config, flags)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        _run_flow(cfg, target, reuse_trained_model)

    return command


def _run_flow(cfg, target: str, reuse_trained_model: bool) -> None:
    from flows.train_cv import train_cv

    started = time.monotonic()
    result = train_cv(config=cfg, target=target, reuse_trained_model=reuse_trained_model)
    elapsed = time.monotonic() - started
    typer.echo("")
    typer.echo(
        f"train-cv finished '{target}' in {elapsed:.1f} s (stages: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
        + ")"
    )
    if result.corpus:
        typer.echo(f"corpus:      {result.corpus.corpus_dir}  clips {result.corpus.counts}")
    if result.training:
        t = result.training
        typer.echo(f"checkpoints: {t.checkpoint_dir}  step {t.steps}, epochs {t.epochs}")
    if result.evaluation:
        e = result.evaluation
        typer.echo(f"test WER:    {e.wer:.4f}")
        typer.echo(f"test CER:    {e.cer:.4f}   (report: {e.report_path})")
    if result.export:
        typer.echo(f"exported:    {result.export.export_dir}")


for _name, _target, _reuse, _help in [
    (
        "run",
        "export",
        False,
        "Run the whole pipeline: validate, features, train, evaluate, export.",
    ),
    ("validate", "validate", False, "Validate/import the corpus into WORKDIR/corpus."),
    ("features", "features", False, "Build the MFCC feature cache."),
    ("train", "train", False, "Train (or continue training) the model."),
    ("evaluate", "evaluate", True, "Evaluate the trained model on the test files."),
    ("export", "export", True, "Export the trained model (evaluating it first)."),
]:
    app.command(_name, help=_help)(_stage_command(_target, _reuse))


@app.command("transcribe", help="Transcribe audio files with an exported model.")
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="wav/mp3/flac files, any rate.")],
    model: Annotated[Path, _opt("model", help="An export directory (holds saved_model/).")],
    json_output: Annotated[bool, _opt("json", help="Print one JSON object per file.")] = False,
) -> None:
    from deepspeech_core.audio import AudioError
    from deepspeech_core.export import ExportedModel

    try:
        exported = ExportedModel(model)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc
    failed = 0
    for path in files:
        try:
            text = exported.transcribe_file(path)
        except AudioError as exc:
            failed += 1
            typer.echo(f"{path}: cannot read audio ({exc})", err=True)
            continue
        typer.echo(
            json.dumps({"file": str(path), "text": text}) if json_output else f"{path}\t{text}"
        )
    if failed:
        raise typer.Exit(code=1)


@app.command("make-demo-corpus", help="Speak a small Common Voice-style corpus with espeak-ng.")
def make_demo_corpus_command(
    out_dir: Annotated[Path, typer.Argument(help="Output folder; the locale dir is OUT_DIR/en.")],
    count: Annotated[int, typer.Option(help="Number of clips.")] = 400,
    seed: Annotated[int, typer.Option(help="Sentence and voice seed.")] = 1,
) -> None:
    from deepspeech_core.demo_corpus import DemoCorpusError, make_demo_corpus

    started = time.monotonic()
    try:
        locale_dir = make_demo_corpus(out_dir, count=count, seed=seed)
    except DemoCorpusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"demo corpus: {locale_dir} ({count} clips, {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    app()
