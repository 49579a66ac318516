"""The character set a model writes, in DeepSpeech's alphabet.txt format.

The CTC blank is not part of the alphabet: it is the extra last output class
(index == len(alphabet)), as in DeepSpeech.

`UTF8Alphabet` is DeepSpeech 0.9.3's `--bytes_output_mode`: the model writes UTF-8
bytes, label i being the byte i + 1 (255 labels, the blank 255), so a language with
thousands of characters (Mandarin, Japanese) needs no alphabet at all. Its alphabet.txt
is a marker file of comments that `Alphabet.load` recognises.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deepspeech_core.workdir.atomic_files import atomic_write_text

BYTES_MARKER = "# bytes_output_mode: this model writes UTF-8 bytes, not characters."


class Alphabet:
    """An ordered set of characters; label i is the i-th character."""

    bytes_output_mode = False

    def __init__(self, characters: Iterable[str]) -> None:
        chars = list(characters)
        if len(set(chars)) != len(chars):
            raise ValueError("alphabet has repeated characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError("every alphabet entry must be exactly one character")
        if not chars:
            raise ValueError("alphabet is empty")
        if not self.bytes_output_mode and ("\n" in chars or "\r" in chars):
            # (bytes output mode's labels are bytes 0x01..0xFF, 0x0A among them)
            raise ValueError(
                "the alphabet cannot hold a line break (\\n or \\r): alphabet.txt has one "
                "character per line, and transcripts with line breaks are rejected"
            )
        self.characters: tuple[str, ...] = tuple(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.characters)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.characters == other.characters

    def __repr__(self) -> str:
        return f"Alphabet({''.join(self.characters)!r})"

    @property
    def blank_index(self) -> int:
        return len(self.characters)

    @property
    def n_classes(self) -> int:
        """Model outputs: every character plus the CTC blank."""
        return len(self.characters) + 1

    def missing(self, text: str) -> list[str]:
        """Characters of `text` that the alphabet cannot write, in first-seen order."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> np.ndarray:
        missing = self.missing(text)
        if missing:
            raise KeyError(f"characters not in the alphabet: {missing!r}")
        return np.array([self._index[c] for c in text], dtype=np.int32)

    def decode(self, labels: Iterable[int]) -> str:
        return "".join(self.characters[i] for i in labels if 0 <= i < len(self.characters))

    @property
    def display(self) -> str:
        """The alphabet as reports and model cards show it."""
        return "".join(self.characters)

    def labels_as_bytes(self) -> list[bytes]:
        """What each label writes, as UTF-8 bytes (DeepSpeech's label_to_str_ values)."""
        return [c.encode("utf-8") for c in self.characters]

    def to_record(self) -> dict:
        """How model.json and metadata.json store it (see `alphabet_from_record`)."""
        return {"alphabet": "".join(self.characters), "bytes_output_mode": False}

    @classmethod
    def from_transcripts(cls, transcripts: Iterable[str]) -> Alphabet:
        """The sorted set of characters used, as DeepSpeech's generate_alphabet does."""
        return cls(sorted({c for t in transcripts for c in t}))

    @classmethod
    def from_text(cls, text: str) -> Alphabet:
        """Parse alphabet.txt: one character per line, `#` comments, `\\#` a literal #.

        The bytes-output-mode marker file gives a `UTF8Alphabet`.
        """
        if text.split("\n", 1)[0].rstrip("\r") == BYTES_MARKER:
            return UTF8Alphabet()
        chars = []
        for line in text.split("\n"):
            line = line.rstrip("\r")
            if line.startswith("#"):
                continue
            if line.startswith("\\#"):
                line = "#"
            if line == "":
                continue
            chars.append(line)
        return cls(chars)

    @classmethod
    def load(cls, path: Path) -> Alphabet:
        return cls.from_text(Path(path).read_text(encoding="utf-8"))

    def to_text(self) -> str:
        lines = ["# Each line is one character; the line with a single space is the space."]
        lines += ["\\#" if c == "#" else c for c in self.characters]
        lines.append("# The last (non-comment) line needs a newline at the end.")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_text())


class UTF8Alphabet(Alphabet):
    """DeepSpeech 0.9.3's UTF8Alphabet: labels 0..254 write the bytes 0x01..0xFF.

    `characters` holds each byte as the Latin-1 character of the same value, so code
    that needs one string per label (TensorFlow string tables, pyctcdecode) works on
    it unchanged; `decode` turns the bytes back into text, replacing invalid UTF-8
    (an untrained model writes any byte sequence) instead of failing.
    """

    bytes_output_mode = True

    def __init__(self) -> None:
        super().__init__(chr(b) for b in range(1, 256))

    def __repr__(self) -> str:
        return "UTF8Alphabet()"

    @property
    def display(self) -> str:
        return "UTF-8 bytes (--bytes_output_mode)"

    def missing(self, text: str) -> list[str]:
        """Only NUL has no label: byte 0 is not among DeepSpeech's 255 classes."""
        return ["\x00"] if "\x00" in text else []

    def encode(self, text: str) -> np.ndarray:
        if "\x00" in text:
            raise KeyError("NUL cannot be written in bytes output mode")
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) - 1

    def decode_bytes(self, labels: Iterable[int]) -> bytes:
        return bytes(i + 1 for i in labels if 0 <= i < 255)

    def decode(self, labels: Iterable[int]) -> str:
        return self.decode_bytes(labels).decode("utf-8", errors="replace")

    def labels_as_bytes(self) -> list[bytes]:
        return [bytes([b]) for b in range(1, 256)]

    def to_record(self) -> dict:
        return {"alphabet": "", "bytes_output_mode": True}

    def to_text(self) -> str:
        return (
            BYTES_MARKER
            + "\n# Labels 0..254 are the bytes 0x01..0xFF (DeepSpeech 0.9.3's UTF8Alphabet); "
            + "label 255 is the CTC blank.\n"
        )


def text_from_label_string(text: str, alphabet: Alphabet) -> str:
    """Text from a string of labels' characters (pyctcdecode's output, for instance).

    In bytes output mode those characters are Latin-1 stand-ins for bytes; a decoder
    that cannot keep to valid UTF-8 (pyctcdecode's) may spell bytes that are not, and
    those are dropped rather than shown as U+FFFD.
    """
    if alphabet.bytes_output_mode:
        return text.encode("latin-1").decode("utf-8", errors="ignore")
    return text


def alphabet_from_record(record: dict) -> Alphabet:
    """The alphabet a model.json or metadata.json describes (`Alphabet.to_record`)."""
    if record.get("bytes_output_mode"):
        return UTF8Alphabet()
    return Alphabet(record["alphabet"])
