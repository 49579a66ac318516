"""`deepspeech-flow`: DeepSpeech.py's flags, run as the train-cv Prefect flow.

Every DeepSpeech flag is accepted as written (`--train_files`) and dashed
(`--train-files`). Stage commands run that stage and whatever it needs that earlier
runs did not leave behind.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Annotated, Literal, get_args, get_origin

import typer

from deepspeech_flow.settings import apply_defaults

apply_defaults()

from deepspeech_core.config import PipelineConfig  # noqa: E402 - after the env defaults
from deepspeech_flow.config_loading import (  # noqa: E402
    FLAG_ALIASES,
    FLAG_FIELDS,
    build_config,
    split_files,
)
from deepspeech_flow.errors import (  # noqa: E402
    ConfigError,
    debug_enabled,
    one_line,
    quiet_expected_errors_in_prefect_log,
    reported,
    set_debug,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train DeepSpeech models with an orchestrated, resumable Prefect pipeline.",
)


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the full traceback of every error (also DEEPSPEECH_FLOW_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Errors the user can fix print one line and exit with their code; --debug shows more."""
    set_debug(debug)


def _command(name: str, **kwargs):
    """app.command, with expected errors reported as one line and an exit code."""

    def register(fn):
        app.command(name, **kwargs)(reported(fn))
        return fn

    return register


def _opt(*names: str, help: str):  # noqa: A002 - typer's keyword
    """An option under each DeepSpeech spelling: --train_files and --train-files."""
    flags = []
    for name in names:
        flags.append(f"--{name}")
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
    return typer.Option(*flags, help=help, show_default=False)


def _bool_opt(name: str, help: str):  # noqa: A002
    """--x_y/--no_x_y, and every dashed or mixed spelling of both (--no-x_y, --no-x-y)."""
    dashed = name.replace("_", "-")
    decls = [f"--{name}/--no_{name}", f" /--no-{name}"]
    if dashed != name:
        decls += [f"--{dashed}/--no-{dashed}", f" /--no_{dashed}"]
    return typer.Option(*decls, help=help, show_default=False)


def _field_help(section: str | None, field: str) -> tuple[object, str]:
    """The config field's type and its description with the default, for --help."""
    model = PipelineConfig if section is None else PipelineConfig.model_fields[section].annotation
    info = model.model_fields[field]
    default = info.get_default(call_default_factory=True)
    shown = "" if default in (None, [], "") else f" [{default}]"
    return info.annotation, (info.description or "") + shown


def _stage_parameters() -> list[inspect.Parameter]:
    """One typed option per config flag (FLAG_FIELDS), plus --config."""
    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Path | None, _opt("config", help="YAML file filling the config.")],
        )
    ]
    params.append(
        inspect.Parameter(
            "retrain_from",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                str | None,
                _opt(
                    "retrain_from",
                    help="current|scratch: a new training (new data) starts from the exported "
                    "model in use, or afresh. [current]",
                ),
            ],
        )
    )
    params.append(
        inspect.Parameter(
            "debug",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--debug", help="Show the traceback of an error.")
            ],
        )
    )
    for flag, (section, field) in FLAG_FIELDS.items():
        annotation, help_text = _field_help(section, field)
        names = (flag, *FLAG_ALIASES.get(flag, ()))
        if annotation is bool:
            cli_type, option = bool | None, _bool_opt(flag, help_text)
        elif annotation == list[Path]:  # DeepSpeech's comma-separated file lists
            cli_type, option = str | None, _opt(*names, help=help_text + " Comma-separated.")
        elif annotation == list[str]:
            cli_type, option = list[str] | None, _opt(*names, help=help_text + " Repeatable.")
        elif get_origin(annotation) is Literal:
            choices = "|".join(get_args(annotation))
            cli_type, option = str | None, _opt(*names, help=f"{choices}: {help_text}")
        else:
            base = next((a for a in get_args(annotation) if a is not type(None)), annotation)
            cli_type, option = base | None, _opt(*names, help=help_text)
        params.append(
            inspect.Parameter(
                flag,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[cli_type, option],
            )
        )
    return params


def _flag_values(options: dict) -> dict:
    """Typer's values as config flags: file lists split, unused repeatables dropped."""
    flags = {}
    for name, value in options.items():
        if value is not None and _field_help(*FLAG_FIELDS[name])[0] == list[Path]:
            value = split_files(value)
        elif value == []:  # a repeatable option that was not given
            value = None
        flags[name] = value
    return flags


def _stage_command(target: str, reuse_trained_model: bool):
    def command(**options) -> None:
        config_file = options.pop("config")
        retrain_from = options.pop("retrain_from") or "current"
        if retrain_from not in ("current", "scratch"):
            raise typer.BadParameter("choose current or scratch", param_hint="--retrain_from")
        set_debug(options.pop("debug") or debug_enabled())
        try:
            cfg = build_config(config_file, _flag_values(options))
        except ValueError as exc:  # pydantic's ValidationError, a bad --augment, the YAML
            raise ConfigError(one_line(exc)) from exc
        _run_flow(cfg, target, reuse_trained_model, retrain_from)

    command = reported(command)
    command.__signature__ = inspect.Signature(_stage_parameters())
    return command


def _run_flow(cfg, target: str, reuse_trained_model: bool, retrain_from: str) -> None:
    """Check what can be checked at once, then run the flow (Prefect starts here)."""
    from deepspeech_core import stopping
    from deepspeech_flow.preflight import check_before_run

    check_before_run(cfg.resolved())
    from deepspeech_flow.progress_display import stage_bars
    from deepspeech_flow.server import temporary_server
    from flows.train_cv import train_cv

    started = time.monotonic()
    with temporary_server(), quiet_expected_errors_in_prefect_log(), stage_bars():
        state = train_cv(
            config=cfg,
            target=target,
            reuse_trained_model=reuse_trained_model,
            retrain_from=retrain_from,
            return_state=True,
        )
    signum = stopping.requested()
    if signum is not None and not state.is_completed():  # Ctrl-C: the run says where
        typer.echo(f"train-cv {state.name.lower()}: {state.message}", err=True)
        raise typer.Exit(code=128 + signum)
    result = state.result()  # the run's error, if it failed
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
        e = result.export
        state = "now current" if e.promoted else f"NOT promoted: {e.promotion_reason}"
        typer.echo(f"exported:    {e.export_dir}  ({state})")


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


def _decoder_help(field: str) -> str:
    """The decoder flag's help and default, from the config (as the stage commands')."""
    return _field_help("evaluation", field)[1]


@_command("transcribe", help="Transcribe audio files with an exported model.")
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="wav/mp3/flac files, any rate.")],
    model: Annotated[
        Path, _opt("model", help="An export directory (uses its `current`) or a version.")
    ],
    backend: Annotated[
        str,
        _opt(
            "backend",
            help="saved_model | tflite | tflite_quant (streaming) | deepspeech | "
            "deepspeech_tensorflow (DeepSpeech 0.9.3's client library on output_graph.tflite "
            "or output_graph.pb, as a DeepSpeech app runs it; --scorer_path takes a .scorer).",
        ),
    ] = "saved_model",
    beam_width: Annotated[int | None, _opt("beam_width", help=_decoder_help("beam_width"))] = None,
    scorer_path: Annotated[
        Path | None, _opt("scorer_path", "scorer", help=_decoder_help("scorer_path"))
    ] = None,
    lm_alpha: Annotated[float | None, _opt("lm_alpha", help=_decoder_help("lm_alpha"))] = None,
    lm_beta: Annotated[float | None, _opt("lm_beta", help=_decoder_help("lm_beta"))] = None,
    json_output: Annotated[bool, _opt("json", help="Print one JSON object per file.")] = False,
) -> None:
    from deepspeech_core.config import DecoderConfig
    from deepspeech_core.data.audio_files import AudioError
    from deepspeech_core.evaluate.decoders import DecoderError
    from deepspeech_core.export.deepspeech_client import ClientError, ClientUnavailableError
    from deepspeech_core.export.store import ExportStoreError
    from deepspeech_core.export.transcriber import BACKENDS, Transcriber

    if backend not in BACKENDS:
        raise typer.BadParameter(f"choose one of {', '.join(BACKENDS)}", param_hint="--backend")
    given = {"beam_width": beam_width, "scorer_path": scorer_path}
    given |= {"lm_alpha": lm_alpha, "lm_beta": lm_beta}
    try:
        decoder = DecoderConfig(**{k: v for k, v in given.items() if v is not None})
        transcriber = Transcriber(model, backend, decoder)  # type: ignore[arg-type]
    except (FileNotFoundError, ExportStoreError, DecoderError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc
    failed = 0
    for path in files:
        started = time.monotonic()
        try:
            text = transcriber.transcribe_file(path)
        except AudioError as exc:
            failed += 1
            typer.echo(f"{path}: cannot read audio ({exc})", err=True)
            continue
        except (ClientError, ClientUnavailableError) as exc:
            failed += 1
            typer.echo(f"{path}: {exc}", err=True)
            continue
        seconds = time.monotonic() - started
        record = {"file": str(path), "text": text, "seconds": round(seconds, 3)}
        typer.echo(json.dumps(record) if json_output else f"{path}\t{text}")
    if failed:
        raise typer.Exit(code=1)


@_command("promote", help="Make an exported version the current model (export/current).")
def promote_command(
    version: Annotated[str, typer.Argument(help="The version to make current, e.g. v3.")],
    export_dir: Annotated[Path, _opt("export_dir", help="The export directory.")] = Path(
        "deepspeech-data/export"
    ),
) -> None:
    from deepspeech_core.export import store as export_store

    try:  # under the export directory's lock: waits for an export running there
        _, before = export_store.promote_version(export_dir, version)
    except export_store.ExportStoreError as exc:
        raise typer.BadParameter(str(exc)) from exc
    was = before.name if before else "unset"
    typer.echo(f"{export_dir / export_store.CURRENT} -> {version} (was {was})")


@_command("status", help="What a work directory holds: corpus, trainings, exports, last run.")
def status_command(
    workdir: Annotated[Path, _opt("workdir", help="The work directory.")] = Path("deepspeech-data"),
    checkpoint_dir: Annotated[
        Path | None, _opt("checkpoint_dir", help="Trainings' folder [WORKDIR/checkpoints].")
    ] = None,
    export_dir: Annotated[
        Path | None, _opt("export_dir", help="Exports' folder [WORKDIR/export].")
    ] = None,
    json_output: Annotated[bool, _opt("json", help="Print it as one JSON object.")] = False,
) -> None:
    from deepspeech_core.workdir.status import workdir_status
    from deepspeech_flow.status_view import status_text

    status = workdir_status(workdir, checkpoint_dir, export_dir)
    typer.echo(status.model_dump_json(indent=2) if json_output else status_text(status))


def _tune_lm_command(**options) -> None:
    from flows.tune_lm import tune_lm_flow

    config_file = options.pop("config")
    options.pop("retrain_from")
    search = {k: options.pop(k) for k in ("n_trials", "lm_alpha_max", "lm_beta_max")}
    try:
        cfg = build_config(config_file, _flag_values(options))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if cfg.evaluation.scorer_path is None:
        raise typer.BadParameter("give the scorer to tune", param_hint="--scorer_path")
    result = tune_lm_flow(config=cfg, **search)
    typer.echo(
        f"best lm_alpha {result.lm_alpha:.4f}, lm_beta {result.lm_beta:.4f}: {result.split} "
        f"WER {result.wer:.4f}, CER {result.cer:.4f} ({len(result.trials)} trials, "
        f"{result.clips} clips)"
    )
    typer.echo(f"saved to {cfg.resolved().workdir / 'reports' / 'lm_tuning.json'}")


_TUNE_OPTIONS = {
    "n_trials": (int, 2400, "Trials of the search (DeepSpeech's --n_trials)."),
    "lm_alpha_max": (float, 5.0, "Largest lm_alpha tried (DeepSpeech's --lm_alpha_max)."),
    "lm_beta_max": (float, 5.0, "Largest lm_beta tried (DeepSpeech's --lm_beta_max)."),
}
_tune_lm_command.__signature__ = inspect.Signature(
    _stage_parameters()
    + [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[kind, _opt(name, help=f"{text} [{default}]")],
        )
        for name, (kind, default, text) in _TUNE_OPTIONS.items()
    ]
)
_command(
    "tune-lm",
    help="Search lm_alpha/lm_beta for --scorer_path on the dev set (DeepSpeech's "
    "lm_optimizer.py); the next evaluation and build-lm --scorer use the best pair.",
)(_tune_lm_command)


def _read_sentences(sources: list[Path]) -> list[str]:
    import pandas as pd

    sentences: list[str] = []
    for path in sources:
        if path.suffix.lower() == ".csv":
            sentences += list(pd.read_csv(path, keep_default_na=False)["transcript"])
        else:
            sentences += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not sentences:
        raise typer.BadParameter("no sentences in the given files", param_hint="SOURCES")
    return sentences


def _scorer_weights(
    default_alpha: float | None, default_beta: float | None, workdir: Path | None
) -> tuple[float, float, str]:
    """The package's default alpha/beta: the flags, else tune-lm's, else DeepSpeech's."""
    from deepspeech_core.config import DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA
    from deepspeech_core.evaluate import lm_tuning

    tuned = lm_tuning.load(workdir) if workdir is not None else None
    source = "DeepSpeech's defaults"
    alpha, beta = DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA
    if tuned is not None:
        alpha, beta, source = tuned.lm_alpha, tuned.lm_beta, f"tune-lm ({workdir})"
    if default_alpha is not None or default_beta is not None:
        source = "given"
    alpha = alpha if default_alpha is None else default_alpha
    beta = beta if default_beta is None else default_beta
    return alpha, beta, source


@_command(
    "build-lm",
    help="Build a word n-gram language model: an ARPA (--out) and/or a DeepSpeech .scorer "
    "package (--scorer) that --scorer_path and DeepSpeech 0.9.3 clients load.",
)
def build_lm(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Text files (a sentence per line) or CSVs with a transcript column."),
    ],
    out: Annotated[Path | None, _opt("out", help="The ARPA file to write.")] = None,
    scorer: Annotated[
        Path | None, _opt("scorer", help="The .scorer package to write (needs `make kenlm`).")
    ] = None,
    order: Annotated[int, _opt("order", help="n-gram order.")] = 3,
    alphabet_config_path: Annotated[
        Path | None,
        _opt(
            "alphabet_config_path",
            help="The model's alphabet.txt, for the scorer's vocabulary trie "
            "[WORKDIR/corpus/alphabet.txt with --workdir].",
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        _opt("workdir", help="Take the alphabet and tune-lm's alpha/beta from this workdir."),
    ] = None,
    default_alpha: Annotated[
        float | None,
        _opt("default_alpha", help="The scorer's default lm_alpha [tune-lm's, else 0.931]."),
    ] = None,
    default_beta: Annotated[
        float | None,
        _opt("default_beta", help="The scorer's default lm_beta [tune-lm's, else 1.183]."),
    ] = None,
) -> None:
    import tempfile

    from deepspeech_core.data.alphabet import Alphabet
    from deepspeech_core.evaluate.arpa_lm import write_arpa
    from deepspeech_core.evaluate.kenlm_tools import KenLMToolError, write_scorer
    from deepspeech_core.evaluate.scorer_package import ScorerError

    if out is None and scorer is None:
        raise typer.BadParameter("give --out (ARPA), --scorer (.scorer) or both")
    sentences = _read_sentences(sources)
    words = len({w for s in sentences for w in s.split()})
    if out is not None:
        write_arpa(sentences, out, order)
        typer.echo(f"{out}: {order}-gram model of {len(sentences)} sentences, {words} words")
    if scorer is None:
        return
    if alphabet_config_path is None and workdir is not None:
        alphabet_config_path = workdir / "corpus" / "alphabet.txt"
    if alphabet_config_path is None or not alphabet_config_path.is_file():
        raise typer.BadParameter(
            f"the model's alphabet is needed for the scorer's vocabulary ({alphabet_config_path}"
            " not found): give --alphabet_config_path, or --workdir of the training",
            param_hint="--alphabet_config_path",
        )
    alpha, beta, source = _scorer_weights(default_alpha, default_beta, workdir)
    with tempfile.TemporaryDirectory() as tmp:
        arpa = out or write_arpa(sentences, Path(tmp) / "lm.arpa", order)
        try:
            n_words = write_scorer(arpa, scorer, Alphabet.load(alphabet_config_path), alpha, beta)
        except (KenLMToolError, ScorerError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
    typer.echo(
        f"{scorer}: DeepSpeech 0.9.3 scorer package, {order}-gram, {n_words} words in its "
        f"vocabulary, default lm_alpha {alpha:.4f}, lm_beta {beta:.4f} ({source})"
    )


@_command("make-demo-corpus", help="Speak a small Common Voice-style corpus with espeak-ng.")
def make_demo_corpus_command(
    out_dir: Annotated[Path, typer.Argument(help="Output folder; the locale dir is OUT_DIR/en.")],
    count: Annotated[int, typer.Option(help="Number of clips.")] = 400,
    seed: Annotated[int, typer.Option(help="Sentence and voice seed.")] = 1,
) -> None:
    from deepspeech_core.data.demo_corpus import DemoCorpusError, make_demo_corpus

    started = time.monotonic()
    try:
        locale_dir = make_demo_corpus(out_dir, count=count, seed=seed)
    except DemoCorpusError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"demo corpus: {locale_dir} ({count} clips, {time.monotonic() - started:.1f} s)")


def main() -> None:
    """The `deepspeech-flow` command: the app, and a prompt exit after a signal stop.

    After a stop by SIGINT/SIGTERM the checkpoint is written, the run's state, logs and
    events are reported and the temporary server is stopped; what remains is the
    interpreter tearing TensorFlow down, several seconds that count against
    `docker stop`'s 10 s, so it is skipped.
    """
    import logging
    import os
    import sys

    from deepspeech_core import stopping

    try:
        app()
    except SystemExit as done:
        if stopping.requested() is None:
            raise
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(done.code if isinstance(done.code, int) else 1)


if __name__ == "__main__":
    main()
