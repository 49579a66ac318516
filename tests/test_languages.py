"""Text in every script: normalisation, alphabets, bytes output mode (no audio here)."""

from __future__ import annotations

import struct
import unicodedata

import numpy as np
import pytest

from deepspeech_core.data.alphabet import Alphabet, UTF8Alphabet, alphabet_from_record
from deepspeech_core.data.sentences import normalize_sentence

pytestmark = pytest.mark.unit  # `make test-fast`


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("Привет, мир: Three six eight three.", "привет мир three six eight three"),
        ("Grüße aus München!", "grüße aus münchen"),
        # Devanagari vowel signs and virama are marks; the danda is punctuation
        ("नमस्ते, दुनिया।", "नमस्ते दुनिया"),
        # Arabic harakat are marks; the Arabic question mark and tatweel go
        ("مَرْحَبًا بِالعـالم؟", "مَرْحَبًا بِالعالم"),
        # final sigma stays final (str.casefold would make it σ)
        ("Καλημέρα, κόσμε! ΟΔΥΣΣΕΥΣ", "καλημέρα κόσμε οδυσσευς"),
        ("你好，世界。", "你好 世界"),
        ("カタカナー・テスト", "カタカナー テスト"),
        ("It\u2019s \u2018quoted\u2019 l\u02bcami", "it's 'quoted' l'ami"),
        # Persian zero-width non-joiner spells the word; direction marks are invisible
        ("\u200fمی\u200cخواهم\u200f", "می\u200cخواهم"),
        ("٣ ٤ 12", "٣ ٤ 12"),
    ],
)
def test_normalisation_keeps_every_script(sentence, expected):
    assert normalize_sentence(sentence) == expected


def test_normalisation_composes_to_nfc():
    decomposed = "Cafe\u0301 u\u0308ber"
    out = normalize_sentence(decomposed)
    assert out == "café über"
    assert unicodedata.is_normalized("NFC", out)


def test_right_to_left_stays_in_logical_order():
    hebrew = "שלום עולם"
    assert normalize_sentence("\u202b" + hebrew + "!\u202c") == hebrew
    assert normalize_sentence(hebrew)[0] == "ש"  # first letter read, first stored


def test_ascii_folding_only_when_asked():
    assert normalize_sentence("Grüße, Привет", ascii_fold=True) == "grue"
    assert normalize_sentence("Grüße, Привет") == "grüße привет"


def test_alphabet_of_combining_marks_round_trips(tmp_path):
    transcripts = [normalize_sentence(s) for s in ["नमस्ते दुनिया", "مَرْحَبًا"]]
    alphabet = Alphabet.from_transcripts(transcripts)
    assert "\u094d" in alphabet.characters
    assert "\u064e" in alphabet.characters  # virama, fatha
    alphabet.save(tmp_path / "alphabet.txt")
    loaded = Alphabet.load(tmp_path / "alphabet.txt")
    assert loaded == alphabet
    for t in transcripts:
        assert loaded.decode(loaded.encode(t)) == t


def test_utf8_alphabet_is_deepspeech_bytes_mode():
    alphabet = UTF8Alphabet()
    assert alphabet.n_classes == 256
    assert alphabet.blank_index == 255
    labels = alphabet.encode("你好 a")
    np.testing.assert_array_equal(labels, np.frombuffer("你好 a".encode(), np.uint8) - 1)
    assert labels[6] == ord(" ") - 1  # DeepSpeech's space label in bytes mode: 31
    assert alphabet.decode(labels) == "你好 a"
    assert alphabet.decode([255, 254]) == "\ufffd"  # blank skipped; a lone 0xFF is invalid
    assert alphabet.decode([0xE4 - 1]) == "\ufffd"  # a truncated sequence: no exception
    assert alphabet.missing("any текст 文字") == []
    assert alphabet.missing("a\x00") == ["\x00"]


def test_utf8_alphabet_labels_as_bytes_and_serialisation():
    from deepspeech_core.export.deepspeech_graphs import alphabet_labels, serialize_alphabet

    alphabet = UTF8Alphabet()
    labels = alphabet.labels_as_bytes()
    assert labels[0] == b"\x01"
    assert labels[-1] == b"\xff"
    assert len(labels) == 255
    blob = serialize_alphabet(alphabet_labels(alphabet))
    # Alphabet::Serialize: uint16 count, then (uint16 label, uint16 length, bytes) each
    assert struct.unpack_from("<H", blob, 0) == (255,)
    offset, seen = 2, {}
    while offset < len(blob):
        label, length = struct.unpack_from("<HH", blob, offset)
        seen[label] = blob[offset + 4 : offset + 4 + length]
        offset += 4 + length
    assert seen == {i: bytes([i + 1]) for i in range(255)}
    assert serialize_alphabet(alphabet_labels(Alphabet(" aé"))) == (
        b"\x03\x00" + b"\x00\x00\x01\x00 " + b"\x01\x00\x01\x00a" + b"\x02\x00\x02\x00\xc3\xa9"
    )


def test_bytes_mode_alphabet_file_and_records(tmp_path):
    UTF8Alphabet().save(tmp_path / "alphabet.txt")
    loaded = Alphabet.load(tmp_path / "alphabet.txt")
    assert isinstance(loaded, UTF8Alphabet)
    assert loaded == UTF8Alphabet()
    # a character alphabet of the same stand-ins (less the line breaks it cannot hold)
    plain = Alphabet(c for c in loaded.characters if c not in "\n\r")
    assert loaded != plain
    assert plain != loaded
    record = loaded.to_record()
    assert record["bytes_output_mode"] is True
    assert isinstance(alphabet_from_record(record), UTF8Alphabet)
    assert alphabet_from_record(Alphabet("ab").to_record()) == Alphabet("ab")
    assert alphabet_from_record({"alphabet": "ab"}) == Alphabet("ab")  # older records


def _byte_logits(paths: list[dict[int, float]]) -> np.ndarray:
    """Log-probabilities [frames, 256]: each frame's {label: p}, the rest on the blank."""
    logits = np.full((len(paths), 256), -30.0, np.float32)
    for t, probs in enumerate(paths):
        for label, p in probs.items():
            logits[t, label] = np.log(p)
        logits[t, 255] = np.log(max(1e-6, 1.0 - sum(probs.values())))
    return logits


def _spell(text: str) -> list[dict[int, float]]:
    """One frame per byte of `text`, a blank frame between (repeats stay apart)."""
    frames: list[dict[int, float]] = []
    for b in text.encode("utf-8"):
        frames += [{b - 1: 0.98}, {}]
    return frames


def test_bytes_mode_greedy_and_beam_decode_unicode():
    from deepspeech_core.config import DecoderConfig
    from deepspeech_core.evaluate.decoders import GreedyDecoder, make_decoder

    alphabet = UTF8Alphabet()
    beam = make_decoder(alphabet, DecoderConfig(beam_width=16))
    logits = _byte_logits(_spell("你好 мир"))
    assert GreedyDecoder(alphabet).decode(logits) == "你好 мир"
    assert beam.decode(logits) == "你好 мир"
    # 好 then the first two bytes of 你 alone: the unfinished character is dropped
    broken = _byte_logits(_spell("好") + _spell("你")[:3])
    assert GreedyDecoder(alphabet).decode(broken) == "好"
    assert beam.decode(broken) == "好"


def test_bytes_mode_beam_search_with_a_word_language_model(tmp_path):
    from deepspeech_core.config import DecoderConfig
    from deepspeech_core.evaluate.arpa_lm import write_arpa
    from deepspeech_core.evaluate.decoders import LMBeamSearchDecoder, make_decoder

    alphabet = UTF8Alphabet()
    # "мир мор": the second byte of the vowel is ambiguous, slightly favouring о (0xBE)
    # over и (0xB8) in both words; the language model knows only "мир".
    frames = _spell("м") + [{0xD0 - 1: 0.98}, {}, {0xBE - 1: 0.55, 0xB8 - 1: 0.43}, {}]
    frames += _spell("р")
    logits = _byte_logits(frames + _spell(" ") + frames)
    acoustic = make_decoder(alphabet, DecoderConfig(beam_width=64)).decode(logits)
    assert acoustic == "мор мор"
    arpa = write_arpa(["мир", "мир мир", "мир да"], tmp_path / "lm.arpa", order=2)
    decoder = make_decoder(alphabet, DecoderConfig(scorer_path=arpa, beam_width=64))
    assert isinstance(decoder, LMBeamSearchDecoder)
    assert decoder.decode(logits) == "мир мир"


def test_language_flags_fill_the_corpus_config(tmp_path):
    from deepspeech_flow.config_loading import build_config

    flags = {"normalize": True, "bytes_output_mode": True}
    cfg = build_config(None, {**flags, "filter_alphabet": str(tmp_path / "a.txt")})
    assert cfg.corpus.normalize_ascii
    assert cfg.corpus.bytes_output_mode
    assert cfg.corpus.filter_alphabet == tmp_path / "a.txt"
    default = build_config(None, {})
    assert not default.corpus.normalize_ascii
    assert not default.corpus.bytes_output_mode


@pytest.mark.parametrize(
    ("sentence", "rejected"),
    [
        ("\u200fשלום עולם\u200f", False),  # Hebrew with right-to-left marks
        ("می\u200cخواهم", False),  # Persian zero-width non-joiner
        ("क्\u200dष", False),  # Devanagari zero-width joiner
        ("zero\u200bwidth", True),  # zero-width space: no script spells with it
        ("word\u2060joiner", True),
        ("tab\tinside", True),
    ],
)
def test_row_validation_keeps_the_invisibles_that_belong_to_writing(sentence, rejected):
    from deepspeech_core.data.validation import Row, _check_characters

    row = Row("train", "train.tsv", 2, None, sentence, sentence)
    _check_characters(row)
    assert (row.reason == "control_character") is rejected, row.detail
