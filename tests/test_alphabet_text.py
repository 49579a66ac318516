import numpy as np
import pytest

from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.data.sentences import normalize_sentence

pytestmark = pytest.mark.unit  # `make test-fast`


def test_parses_deepspeech_alphabet_format():
    text = "# comment\n \na\nb\n\\#\n'\n# trailing comment\n"
    alphabet = Alphabet.from_text(text)
    assert alphabet.characters == (" ", "a", "b", "#", "'")
    assert alphabet.blank_index == 5
    assert alphabet.n_classes == 6


def test_round_trips_through_file(tmp_path):
    alphabet = Alphabet(" abc#'")
    alphabet.save(tmp_path / "alphabet.txt")
    assert Alphabet.load(tmp_path / "alphabet.txt") == alphabet


def test_encode_decode_and_missing():
    alphabet = Alphabet.from_transcripts(["ab c", "cab"])
    assert alphabet.characters == (" ", "a", "b", "c")
    labels = alphabet.encode("cab a")
    np.testing.assert_array_equal(labels, [3, 1, 2, 0, 1])
    assert alphabet.decode(labels) == "cab a"
    assert alphabet.decode([4]) == ""  # the blank writes nothing
    assert alphabet.missing("abxyx") == ["x", "y"]
    with pytest.raises(KeyError, match=r"characters not in the alphabet: \['x'\]"):
        alphabet.encode("x")


def test_rejects_bad_alphabets():
    with pytest.raises(ValueError, match="alphabet has repeated characters"):
        Alphabet("aa")
    with pytest.raises(ValueError, match="alphabet is empty"):
        Alphabet([])


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("Four two seven.", "four two seven"),
        ("Don't stop — “Café” well-known!", "don't stop café well known"),
        ("  Spaces\tand\nnewlines  ", "spaces and newlines"),
        ("It\u2019s", "it's"),
    ],
)
def test_normalises_like_deepspeech_importer(sentence, expected):
    assert normalize_sentence(sentence) == expected


def test_normalisation_options():
    assert normalize_sentence("Café", ascii_fold=True) == "cafe"
    assert normalize_sentence("A-B", lowercase=False, keep="-") == "A-B"
