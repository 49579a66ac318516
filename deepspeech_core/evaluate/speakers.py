"""Who spoke each test clip: Common Voice's client_id, gender, age and accent.

A model that learns its training voices instead of the language scores well on them
and badly on anyone else; Common Voice's official splits keep speakers apart, and
the error rates per speaker (and per gender, age and accent where the release fills
those columns) show how even the model is across voices. The corpus CSVs name each
clip's Common Voice tsv (`source`), so the columns are read back from the user's
tsv (read only) when a report needs them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from deepspeech_core.data.csv_reader import TableError, read_table

SPEAKER = "client_id"
DEMOGRAPHICS = ("gender", "age", "accent")  # grouped where the release fills them
# An imported clip's name: the source's stem, '-', 10 hex digits of its hash, '.wav'.
_IMPORTED = re.compile(r"^(?P<stem>.*)-[0-9a-f]{10}\.wav$")


def _clip_key(wav_filename: str) -> str:
    """The source clip's stem of a corpus wav (imported or used as it was)."""
    name = Path(wav_filename).name
    match = _IMPORTED.match(name)
    return match.group("stem") if match else Path(name).stem


def _tsv_rows(tsv: Path) -> dict[str, dict[str, str]]:
    """stem of `path` -> the row's speaker columns, for one Common Voice tsv."""
    try:
        rows = read_table(tsv, "\t", ["path"])
    except (TableError, OSError):
        return {}
    columns = (SPEAKER, *DEMOGRAPHICS)
    found = {}
    for row in rows:
        if row.fields and row.fields.get("path"):
            values = {c: (row.fields.get(c) or "").strip() for c in columns}
            found[Path(row.fields["path"].strip()).stem] = values
    return found


def clip_speakers(wav_filenames: Sequence[str], sources: Sequence[str]) -> list[dict[str, str]]:
    """Each clip's {client_id, gender, age, accent} ('' where unknown), in clip order.

    Clips from DeepSpeech CSVs (no speaker columns) get empty values throughout.
    """
    tables: dict[str, dict[str, dict[str, str]]] = {}
    out = []
    for wav, source in zip(wav_filenames, sources, strict=True):
        if source.endswith(".tsv") and source not in tables:
            tables[source] = _tsv_rows(Path(source))
        row = tables.get(source, {}).get(_clip_key(wav), {})
        out.append({c: row.get(c, "") for c in (SPEAKER, *DEMOGRAPHICS)})
    return out


def group_by(values: Sequence[str], items: Sequence) -> dict[str, list]:
    """items grouped by their value, in sorted value order; no groups if none is known."""
    if not any(values):
        return {}
    groups: dict[str, list] = {}
    for value, item in zip(values, items, strict=True):
        groups.setdefault(value or "(unknown)", []).append(item)
    return dict(sorted(groups.items()))
