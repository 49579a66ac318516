"""Reading Common Voice tsv and DeepSpeech CSV files row by row, keeping line numbers.

Real releases carry byte-order marks, CRLF line ends, stray non-UTF-8 bytes and rows
with the wrong number of fields. None of these may stop a corpus from loading or make
a row vanish: each row comes back either as a dict of its fields or as the reason it
cannot be read, with the line it stands on, so it can be listed in rejected.csv.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

_SURROGATES = re.compile("[\udc80-\udcff]")


class TableError(ValueError):
    """The file as a whole cannot be used (no header, a required column missing)."""


@dataclass(frozen=True)
class TableRow:
    line: int
    fields: dict[str, str] | None  # None when the row is malformed
    problem: str = ""


def _decode(data: bytes) -> str:
    """UTF-8 (a BOM is dropped); undecodable bytes survive as lone surrogates."""
    return data.decode("utf-8-sig", errors="surrogateescape")


def read_table(path: Path, delimiter: str, required: list[str]) -> list[TableRow]:
    """Rows of a tsv (Common Voice, unquoted) or csv (DeepSpeech, quoted) file."""
    text = _decode(Path(path).read_bytes())
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        raise TableError(f"{path} is empty: it needs a header line with {required}")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise TableError(
            f"{path} has no column(s) {missing}; found {header}. Common Voice tsv files need "
            "'path' and 'sentence'; DeepSpeech CSVs need 'wav_filename' and 'transcript'."
        )
    rows: list[TableRow] = []
    line = reader.line_num
    for record in reader:
        start, line = line + 1, reader.line_num
        if not record or record == [""]:
            continue  # blank line
        if len(record) != len(header):
            rows.append(
                TableRow(start, None, f"expected {len(header)} fields, found {len(record)}")
            )
            continue
        fields = dict(zip(header, record, strict=True))
        bad = [k for k in required if _SURROGATES.search(fields[k])]
        if bad:
            rows.append(TableRow(start, None, f"column(s) {bad} are not valid UTF-8"))
            continue
        rows.append(TableRow(start, fields))
    return rows
