"""Reading Common Voice tsv and DeepSpeech CSV files row by row, keeping line numbers.

Real releases carry byte-order marks, CRLF line ends, stray non-UTF-8 bytes (in any
column), rows with the wrong number of fields, unbalanced quotes and fields over the csv
module's size limit. None of these may stop a corpus from loading or make a row vanish:
each row comes back either as a dict of its fields or as the reason it cannot be read,
with the line it stands on, so it can be listed in rejected.csv.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
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


class _Lines:
    """The file's physical lines, handed to csv.reader one at a time from a position
    that can be moved back (to re-read lines a runaway quoted field swallowed)."""

    def __init__(self, text: str) -> None:
        self.lines = list(io.StringIO(text, newline=""))  # splits on \n, \r\n and \r only
        self.pos = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.lines):
            raise StopIteration
        self.pos += 1
        return self.lines[self.pos - 1]


def _records(lines: _Lines, reader) -> Iterator[tuple[int, list[str] | None, str]]:
    """(line number, fields or None, problem) for every non-blank physical line's record.

    A record may span lines only through a quoted line break; then its first line is
    reported as malformed and the following lines are read again as rows of their own,
    so an unbalanced quote cannot silently swallow the rest of the file.
    """
    while True:
        start = lines.pos
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
            lines.pos = start + 1
            yield start + 1, None, f"unreadable row: {exc}"
            continue
        if lines.pos - start > 1:
            yield (
                start + 1,
                None,
                f"a quoted field runs over lines {start + 1}-{lines.pos}: a line break inside "
                "quotes, or an unbalanced quote; the following lines are read on their own",
            )
            lines.pos = start + 1
            continue
        if record and record != [""]:
            yield start + 1, record, ""


def read_table(path: Path, delimiter: str, required: list[str]) -> list[TableRow]:
    """Rows of a tsv (Common Voice, unquoted) or csv (DeepSpeech, quoted) file."""
    lines = _Lines(_decode(Path(path).read_bytes()))
    if delimiter == "\t":
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    records = _records(lines, reader)
    first = next(records, None)
    if first is None:
        raise TableError(f"{path} is empty: it needs a header line with {required}")
    if first[1] is None:
        raise TableError(f"{path}: the header line cannot be read ({first[2]}); fix line 1")
    header = [h.strip() for h in first[1]]
    missing = [c for c in required if c not in header]
    if missing:
        raise TableError(
            f"{path} has no column(s) {missing}; found {header}. Common Voice tsv files need "
            "'path' and 'sentence'; DeepSpeech CSVs need 'wav_filename' and 'transcript'."
        )
    rows: list[TableRow] = []
    for line, record, problem in records:
        if record is None:
            rows.append(TableRow(line, None, problem))
        elif len(record) != len(header):
            rows.append(TableRow(line, None, f"expected {len(header)} fields, found {len(record)}"))
        elif bad := [h for h, v in zip(header, record, strict=True) if _SURROGATES.search(v)]:
            rows.append(TableRow(line, None, f"column(s) {bad} are not valid UTF-8"))
        else:
            rows.append(TableRow(line, dict(zip(header, record, strict=True))))
    return rows
