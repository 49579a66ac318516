"""The character set a model writes, in DeepSpeech's alphabet.txt format.

The CTC blank is not part of the alphabet: it is the extra last output class
(index == len(alphabet)), as in DeepSpeech.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from deepspeech_core.io_utils import atomic_write_text


class Alphabet:
    """An ordered set of characters; label i is the i-th character."""

    def __init__(self, characters: Iterable[str]) -> None:
        chars = list(characters)
        if len(set(chars)) != len(chars):
            raise ValueError("alphabet has repeated characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError("every alphabet entry must be exactly one character")
        if not chars:
            raise ValueError("alphabet is empty")
        if "\n" in chars or "\r" in chars:
            raise ValueError(
                "the alphabet cannot hold a line break (\\n or \\r): alphabet.txt has one "
                "character per line, and transcripts with line breaks are rejected"
            )
        self.characters: tuple[str, ...] = tuple(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.characters)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and self.characters == other.characters

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

    @classmethod
    def from_transcripts(cls, transcripts: Iterable[str]) -> Alphabet:
        """The sorted set of characters used, as DeepSpeech's generate_alphabet does."""
        return cls(sorted({c for t in transcripts for c in t}))

    @classmethod
    def from_text(cls, text: str) -> Alphabet:
        """Parse alphabet.txt: one character per line, `#` comments, `\\#` a literal #."""
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
