"""Nothing of the user's is written: inputs must not overlap what the pipeline writes.

The stages write WORKDIR/corpus (CSVs, alphabet, imported clips), WORKDIR/features and
WORKDIR/reports, and --test_output_file. An input that is one of those files or lies in
one of those directories would be replaced by a run (`--train_files
WORKDIR/corpus/train.csv` is rewritten by the validation reading it), and a Common
Voice corpus there would get the imported clips mixed into its own `clips/`. The check
compares resolved paths (symlinks) and, for what exists, device and inode
(`os.path.samefile`: hard links, bind mounts), and refuses with what to do instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from deepspeech_core.config import CorpusConfig


class OverlapError(ValueError):
    """An input is, or lies in, something the pipeline writes; the message says what to do."""


def stage_outputs(workdir: Path) -> dict[str, Path]:
    """The directories under WORKDIR that the stages own, by what they hold."""
    workdir = Path(workdir)
    return {
        "validated corpus (CSVs, alphabet, imported clips)": workdir / "corpus",
        "feature cache": workdir / "features",
        "reports": workdir / "reports",
    }


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def within(path: Path, directory: Path) -> bool:
    """Is `path` `directory` itself or inside it (through symlinks, hard links, bind mounts)?"""
    path, directory = Path(path).resolve(), Path(directory).resolve()
    if path == directory or directory in path.parents:
        return True
    return directory.exists() and any(_same(p, directory) for p in (path, *path.parents))


def _inputs(cfg: CorpusConfig) -> Iterator[tuple[str, Path]]:
    if cfg.corpus is not None:
        yield "--corpus", Path(cfg.corpus)
    for split in ("train", "dev", "test"):
        for path in getattr(cfg, f"{split}_files"):
            yield f"--{split}_files", Path(path)
    if cfg.alphabet_config_path is not None:
        yield "--alphabet_config_path", Path(cfg.alphabet_config_path)


def check_inputs_outside_outputs(
    cfg: CorpusConfig, workdir: Path, output_files: dict[str, Path | None] | None = None
) -> None:
    """Raise OverlapError when an input overlaps an output of a run in `workdir`.

    `output_files` names single files a run writes besides the stage directories (e.g.
    {"--test_output_file": path}).
    """
    outputs = stage_outputs(workdir)
    files = {flag: Path(p) for flag, p in (output_files or {}).items() if p is not None}
    for flag, path in _inputs(cfg):
        for what, out in outputs.items():
            if within(path, out):
                raise OverlapError(
                    f"{flag} {path} is inside {out}, where the pipeline writes its {what}: a "
                    f"run would overwrite or mix into it. Copy it out of there and pass the "
                    f"copy (e.g. cp -r {path} ~/), or give another --workdir."
                )
        for out_flag, out in files.items():
            if within(out, path):
                raise OverlapError(
                    f"{out_flag} {out} would be written over (or into) the input {flag} "
                    f"{path}: choose another {out_flag}."
                )
    if cfg.corpus is not None:
        clips = Path(cfg.corpus) / "clips"
        written = {**outputs, **files}
        for what, out in written.items():
            if within(out, clips):
                raise OverlapError(
                    f"the {what} {out} would be written inside the corpus's own {clips}: give "
                    "a --workdir (or output file) outside the corpus."
                )
