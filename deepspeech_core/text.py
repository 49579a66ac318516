"""Sentence normalisation, as DeepSpeech's Common Voice importer did it.

Common Voice sentences are sentence-case with punctuation ("Four two seven."); the
model writes a small alphabet, so text is folded to ASCII, lowercased and stripped of
punctuation before training. The original sentence is kept beside it for the record.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_sentence(
    sentence: str, *, ascii_fold: bool = True, lowercase: bool = True, keep: str = "'"
) -> str:
    """Return the transcript the model should learn for `sentence`.

    Letters, digits, spaces and the characters in `keep` survive; other punctuation
    becomes a space (so "well-known" -> "well known"), then spaces are collapsed.
    """
    text = sentence.replace("\u2019", "'")  # typographic apostrophe, before ASCII folding
    if ascii_fold:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    if lowercase:
        text = text.lower()
    out = []
    for ch in text:
        if ch.isalnum() or ch in keep:
            out.append(ch)
        else:
            out.append(" ")
    return _SPACES.sub(" ", "".join(out)).strip()
