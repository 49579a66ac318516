"""Versioned exports: EXPORT_DIR/v1, v2, ... and EXPORT_DIR/current -> the model in use.

    EXPORT_DIR/v3/            one complete export (saved_model/, *.tflite, metadata, ...)
    EXPORT_DIR/current        symlink to the promoted version (what `transcribe` uses)
    EXPORT_DIR/.v4.staging-*  an export being written (removed if found stale)

A version is written under a staging name and renamed into place in one step, and
`current` is replaced by an atomic symlink rename, so an interrupted export never leaves
half a model where a complete one is expected and never moves `current`. Versions are
never overwritten: a model that was not promoted stays beside the one in use.

One export or promotion at a time per export directory (EXPORT_DIR/export.lock, see
`locking`): two runs sharing an --export_dir would otherwise take the same version
number and remove each other's staging directory as "stale". Files and directories are
created with the umask's permissions, so the users who serve the model can read it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path

from deepspeech_core.workdir.atomic_files import fsync_dir, fsync_tree
from deepspeech_core.workdir.locking import describe_holder, export_lock

log = logging.getLogger(__name__)

CURRENT = "current"
_VERSION = re.compile(r"^v(\d+)$")


class ExportStoreError(ValueError):
    """The export directory cannot be used as asked; the message says what to do."""


def versions(root: Path) -> list[Path]:
    """Complete versions under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    return [p for _, p in sorted(found)]


def current(root: Path) -> Path | None:
    """The promoted version, or None before the first promotion."""
    link = Path(root) / CURRENT
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


def exported_checkpoint(version: Path) -> str | None:
    """The checkpoint an export version was made from, as its metadata.json records it."""
    try:
        metadata = json.loads((Path(version) / "metadata.json").read_text())
    except (OSError, ValueError):
        return None
    checkpoint = metadata.get("checkpoint") if isinstance(metadata, dict) else None
    return str(checkpoint) if checkpoint is not None else None


def clean_stale_staging(root: Path) -> int:
    """Remove what interrupted exports left; returns how many."""
    root = Path(root)
    stale = list(root.glob(".v*.staging-*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def new_staging(root: Path) -> tuple[Path, str]:
    """(staging directory, version name it will become)."""
    root = Path(root)
    if (root / "saved_model").is_dir():
        raise ExportStoreError(
            f"{root} holds an unversioned export (saved_model/ directly inside): move it "
            "away or give another --export_dir; exports are now kept as versions v1, v2, ..."
        )
    root.mkdir(parents=True, exist_ok=True)
    existing = versions(root)
    number = int(existing[-1].name[1:]) + 1 if existing else 1  # versions() are all v<n>
    name = f"v{number}"
    while True:  # not mkdtemp: its 0700 would hide the model from the users who serve it
        staging = root / f".{name}.staging-{secrets.token_hex(4)}"
        try:
            staging.mkdir(0o777)  # less the umask, as any directory
        except FileExistsError:
            continue
        return staging, name


def commit(staging: Path, name: str) -> Path:
    """Rename a finished staging directory to its version name (one atomic step)."""
    target = staging.parent / name
    if target.exists():
        raise ExportStoreError(f"{target} already exists: another export ran at the same time")
    fsync_tree(staging)  # every file on disk before the version counts as written
    staging.rename(target)
    fsync_dir(staging.parent)
    return target


def promote(root: Path, version: Path) -> Path:
    """Point `current` at `version` with an atomic rename of a new symlink."""
    root = Path(root)
    link = root / CURRENT
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path(version).name)  # relative: the directory can be moved as a whole
    os.replace(tmp, link)
    fsync_dir(root)
    log.info("%s now points to %s", link, Path(version).name)
    return link


def promote_version(root: Path, name: str, wait: float = 600.0) -> tuple[Path, Path | None]:
    """Make version `name` current, under the export lock; returns (version, previous).

    Waits (up to `wait` seconds) for an export running in the same directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ExportStoreError(f"{root} is not an export directory: give --export_dir")

    def waiting(holder: dict) -> None:
        log.warning("waiting for the export in %s (%s)", root, describe_holder(holder))

    with export_lock(root, wait=wait, on_wait=waiting):
        target = root / name
        if target not in versions(root):
            known = ", ".join(v.name for v in versions(root)) or "none"
            raise ExportStoreError(f"{target} is not an export version (there are: {known})")
        before = current(root)
        promote(root, target)
    return target, before


def resolve_model_dir(path: Path) -> Path:
    """The export version a user means: a version directory, or a root's `current`."""
    path = Path(path)
    if (path / "metadata.json").is_file():
        return path
    promoted = current(path)
    if promoted is not None:
        return promoted
    raise ExportStoreError(
        f"{path} is not an exported model: pass an export directory that has `current` "
        "(or one of its versions, e.g. EXPORT_DIR/v2) from a finished run"
    )
