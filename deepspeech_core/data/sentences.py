"""Sentence normalisation that keeps the language.

Common Voice sentences are written with punctuation and case ("Привет, мир!"); the
model learns the words, so punctuation becomes spaces and letters are lowercased.
Everything a script spells with is kept: letters and combining marks of any script
(a Devanagari vowel sign or an Arabic haraka is a mark, which `str.isalnum` would
drop), digits, and the apostrophe (typographic ones unified to '). Text is Unicode NFC
so that a letter typed precomposed or as letter + accent is one alphabet entry.
Right-to-left text is stored in logical order already and is never reordered; only
invisible direction controls are dropped.

Folding to ASCII (DeepSpeech's `import_cv2.py --normalize`) is opt-in: it turns "ü"
into "u" and erases every non-Latin script. The original sentence is kept beside the
transcript for the record.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
# Apostrophes as typed on phones and in typeset text: ’ ‘ ʼ ′ ` ´
_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc\u2032\u0060\u00b4", "'"))
# Characters that carry no sound and must not reach the alphabet: bidirectional
# controls (LRM, RLM, embeddings, isolates), soft hyphen, BOM, Arabic tatweel (a
# stretching stroke).
_DROPPED_CHARACTERS = (
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u00ad\ufeff\u0640"
)
_DROPPED = str.maketrans(dict.fromkeys(_DROPPED_CHARACTERS, None))
# Zero-width (non-)joiners spell Persian and Indic words; they are kept between letters.
_JOINERS = "\u200c\u200d"
# Invisible characters that are part of writing (direction marks in Arabic and Hebrew
# sentences, joiners in Persian and Indic words): the normaliser handles them, so row
# validation must not reject a sentence for holding them.
ORTHOGRAPHIC_INVISIBLES = frozenset(_DROPPED_CHARACTERS + _JOINERS)


def _kept(ch: str, keep: str) -> bool:
    """Letters (L*), combining marks (M*) and decimal digits of any script, plus `keep`."""
    category = unicodedata.category(ch)
    return category[0] in "LM" or category == "Nd" or ch in keep or ch in _JOINERS


def normalize_sentence(
    sentence: str, *, ascii_fold: bool = False, lowercase: bool = True, keep: str = "'"
) -> str:
    """Return the transcript the model should learn for `sentence`.

    Lowercasing is `str.lower` rather than `str.casefold`: casefold spells German "ß"
    as "ss" and Greek final "ς" as "σ", which changes the words. Scripts without case
    are unaffected. Other punctuation and symbols become a space (so "well-known" ->
    "well known"), then spaces are collapsed.
    """
    text = unicodedata.normalize("NFC", sentence).translate(_APOSTROPHES).translate(_DROPPED)
    if ascii_fold:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    if lowercase:
        text = unicodedata.normalize("NFC", text.lower())
    out = "".join(ch if _kept(ch, keep) else " " for ch in text)
    out = _strip_stray_joiners(_SPACES.sub(" ", out).strip())
    return out


def _strip_stray_joiners(text: str) -> str:
    """Drop zero-width joiners that no longer sit between two kept characters."""
    if not any(j in text for j in _JOINERS):
        return text
    chars = list(text)
    for i, ch in enumerate(chars):
        if ch in _JOINERS:
            before = chars[i - 1] if i > 0 else " "
            after = chars[i + 1] if i + 1 < len(chars) else " "
            if before == " " or after == " " or before in _JOINERS:
                chars[i] = ""
    return _SPACES.sub(" ", "".join(chars)).strip()
