"""Small file helpers: atomic writes and content hashes.

Every output of the pipeline is written to a temporary name and renamed into place,
so a killed process never leaves a half-written file where a complete one is expected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def _open_beside(path: Path, suffix: str) -> tuple[Path, int]:
    """A new, empty file beside `path` with the mode a plain open() would give it, and
    its open (write-only) descriptor.

    Not tempfile.mkstemp: its files are 0600 whatever the umask, so every output renamed
    from one (metadata.json, the CSVs, ...) would be unreadable to the other users who
    serve or share the model.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        return tmp, fd
    raise FileExistsError(f"no free temporary name beside {path}")


def _create_beside(path: Path, suffix: str) -> Path:
    tmp, fd = _open_beside(path, suffix)
    os.close(fd)
    return tmp


@contextmanager
def atomic_binary_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file object writing a temporary beside `path` (whose folder exists),
    renamed onto `path` when the block succeeds; not synced (atomic_path's durable=False).

    For many small outputs (imported clips): the temporary is written through the handle
    that created it, one file creation and one rename per output.
    """
    tmp, fd = _open_beside(Path(path), "")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path, suffix: str = "", durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    `durable` (the default) syncs the file before the rename and the directory after
    it, so that after a power loss `path` is the old file or the whole new one, never
    an empty one. Outputs that are checked on reading and rebuilt when damaged (imported
    clips) skip it: one sync per clip would cost more than the import.

    The file is created with the process's umask applied, as the final file would be.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_beside(path, suffix)
    try:
        yield tmp_path
        if durable:
            fsync_file(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    """Flush a file's data to the disk (it survives a power loss once this returns)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries: a rename or new file in it survives a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a platform or filesystem without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; nothing more to do
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (before renaming it into place)."""
    root = Path(root)
    for directory, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(directory) / name)
        fsync_dir(Path(directory))


def read_json_or_none(path: Path, what: str) -> Any | None:
    """A JSON state file, or None when it is missing or damaged (empty, truncated).

    Callers rebuild what the file described; a damaged one is logged with its name,
    so that a power loss costs a recomputation instead of failing every later run.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("%s %s is damaged (%s); it will be rebuilt", what, path, exc)
        return None


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()
