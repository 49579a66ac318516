"""Checks a command makes before Prefect starts (a second or two instead of fifteen).

Starting the flow costs a Prefect server start-up; a missing corpus, an unreadable CSV
or a busy work directory is known from the file system at once. These checks look only
at paths and header lines: the stages still validate everything in depth.
"""

from __future__ import annotations

import time
from pathlib import Path

from deepspeech_core.config import PipelineConfig
from deepspeech_core.workdir.locking import LockedError, workdir_holder
from deepspeech_flow.errors import ConfigError, DataError

SPLITS = ("train", "dev", "test")


def _header(path: Path, delimiter: str) -> list[str]:
    """The header line's column names ([] for an empty file)."""
    with path.open("rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace")
    return [c.strip().strip('"') for c in first.rstrip("\r\n").split(delimiter)] if first else []


def _check_table(path: Path, delimiter: str, required: list[str], flag: str) -> None:
    if not path.is_file():
        raise DataError(f"{flag}: {path} does not exist")
    try:
        header = _header(path, delimiter)
    except OSError as exc:
        raise DataError(f"{flag}: cannot read {path} ({exc.strerror or exc})") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{flag}: {path} has no column(s) {missing} in its header line (found {header}); "
            f"it needs {required}"
        )


def check_corpus(cfg: PipelineConfig) -> None:
    """The corpus folder or CSVs exist and have the columns the validate stage reads."""
    source = cfg.corpus
    if source.corpus is not None:
        root = source.corpus
        if not root.is_dir():
            raise DataError(f"--corpus {root} does not exist (or is not a folder)")
        if not (root / "clips").is_dir():
            raise DataError(
                f"{root} is not a Common Voice locale directory: it has no clips/ folder. "
                "Point --corpus at the folder holding clips/ and train.tsv (e.g. cv-corpus/en)."
            )
        for split in SPLITS:
            _check_table(root / f"{split}.tsv", "\t", ["path", "sentence"], "--corpus")
    for split in SPLITS:
        for csv_path in getattr(source, f"{split}_files"):
            _check_table(csv_path, ",", ["wav_filename", "transcript"], f"--{split}_files")


def _check_paths(cfg: PipelineConfig) -> None:
    """Files and folders named by flags exist."""
    named = {
        "--alphabet_config_path": (cfg.corpus.alphabet_config_path, "file"),
        "--scorer_path": (cfg.evaluation.scorer_path, "file"),
        "--load_checkpoint_dir": (cfg.training.load_checkpoint_dir, "dir"),
    }
    for flag, (path, kind) in named.items():
        if path is None:
            continue
        exists = path.is_file() if kind == "file" else path.is_dir()
        if not exists:
            raise DataError(f"{flag} {path} does not exist")
    if cfg.workdir.exists() and not cfg.workdir.is_dir():
        raise ConfigError(f"--workdir {cfg.workdir} is a file, not a folder")


def check_workdir_free(workdir: Path) -> None:
    """Another run holds the work directory: say so now, not after Prefect started."""
    holder = workdir_holder(workdir)
    if holder is None:
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    raise LockedError(
        f"{workdir} is in use by another train-cv run (pid {holder.get('pid')} on "
        f"{holder.get('host')}, since {since}). Wait for it to finish, stop it, or use "
        f"another --workdir. If that process is gone for good, delete {workdir / 'run.lock'}."
    )


def check_before_run(cfg: PipelineConfig) -> None:
    """Everything a run can know is wrong before it starts; raises the first problem."""
    has_source = cfg.corpus.corpus is not None or any(
        getattr(cfg.corpus, f"{s}_files") for s in SPLITS
    )
    if not has_source:
        raise ConfigError(
            "no input: give --corpus CV_LOCALE_DIR or --train_files/--dev_files/--test_files"
        )
    check_corpus(cfg)
    _check_paths(cfg)
    check_workdir_free(cfg.workdir)
