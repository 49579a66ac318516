"""Corpora in six scripts spoken by espeak-ng: import keeps the text, models train on it."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pandas as pd
import pytest

from deepspeech_core.config import CorpusConfig, FeatureConfig
from deepspeech_core.data.alphabet import Alphabet, UTF8Alphabet
from deepspeech_core.data.language_corpora import LANGUAGES, make_language_corpus
from deepspeech_core.data.validation import validate_corpus

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are needed to speak the corpora (make setup installs them)",
)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("languages")
    return {lang: make_language_corpus(root, lang, count=8, seed=2) for lang in LANGUAGES}


def _spelling(text: str) -> list[str]:
    """The letters, marks and digits of `text` in order, as the model should learn them."""
    text = unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).lower())
    return [c for c in text if unicodedata.category(c)[0] in "LM" or c.isdigit()]


def _validate(cv: Path, workdir: Path, **options):
    cfg = CorpusConfig(corpus=cv, import_workers=1, **options)
    return validate_corpus(cfg, FeatureConfig(), workdir)


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_import_keeps_every_character_and_no_other(corpora, language, tmp_path):
    manifest = _validate(corpora[language], tmp_path)
    assert sum(sum(r.values()) for r in manifest.rejected.values()) == 0
    rows = pd.concat(pd.read_csv(p, keep_default_na=False) for p in manifest.splits.values())
    assert len(rows) == 8
    for sentence, transcript in zip(rows.sentence, rows.transcript, strict=True):
        # every letter and mark of the sentence, in order; nothing else but spaces
        assert _spelling(transcript) == _spelling(sentence), sentence
        assert set(transcript) <= set(_spelling(sentence)) | {" "}, sentence
        assert unicodedata.is_normalized("NFC", transcript)
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    alphabet = Alphabet.load(manifest.alphabet_path)
    assert set(alphabet.characters) == set("".join(train.transcript))


def test_filter_alphabet_rejects_rows_naming_the_characters(corpora, tmp_path):
    german = corpora["de"]
    sentences = {
        split: "".join(pd.read_csv(german / f"{split}.tsv", sep="\t").sentence).lower()
        for split in ("train", "dev", "test")
    }
    # a German letter some training rows have and the dev and test rows do not
    dropped = next(
        c
        for c in "ßüöä"
        if c in sentences["train"] and c not in sentences["dev"] + sentences["test"]
    )
    letters = {c for text in sentences.values() for c in _spelling(text)}
    Alphabet(sorted(letters - {dropped}) + [" "]).save(tmp_path / "filter.txt")
    manifest = _validate(german, tmp_path / "work", filter_alphabet=tmp_path / "filter.txt")
    rejected = pd.read_csv(manifest.rejected_csv, keep_default_na=False)
    assert len(rejected) > 0
    assert set(rejected.reason) == {"alphabet"}
    assert all(repr(dropped) in d for d in rejected.detail)
    rows = pd.concat(pd.read_csv(p, keep_default_na=False) for p in manifest.splits.values())
    assert len(rows) + len(rejected) == 8
    assert dropped not in "".join(rows.transcript)
    assert dropped not in Alphabet.load(manifest.alphabet_path).characters


def test_normalize_folds_to_ascii_only_when_asked(corpora, tmp_path):
    folded = _validate(corpora["de"], tmp_path / "ascii", normalize_ascii=True)
    text = "".join(pd.read_csv(folded.splits["train"], keep_default_na=False).transcript)
    assert text.isascii()
    assert "ü" not in text
    kept = _validate(corpora["de"], tmp_path / "kept")
    report = json.loads(kept.report_path.read_text())
    assert set(report["alphabet"]) & set("äöüß")


def test_bytes_output_mode_import_writes_the_marker_alphabet(corpora, tmp_path):
    manifest = _validate(corpora["cmn"], tmp_path, bytes_output_mode=True)
    assert isinstance(Alphabet.load(manifest.alphabet_path), UTF8Alphabet)
    train = pd.read_csv(manifest.splits["train"], keep_default_na=False)
    text = "".join(train.transcript)
    assert all("\u4e00" <= c <= "\u9fff" or c == " " for c in text)
    assert len(text) > 6
