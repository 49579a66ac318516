"""DeepSpeech .scorer packages: the trie's OpenFST layout, the header, the decoder's use."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from deepspeech_core.config import DEEPSPEECH_LM_ALPHA, DecoderConfig
from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.evaluate.arpa_lm import write_arpa
from deepspeech_core.evaluate.decoders import LMBeamSearchDecoder, make_decoder
from deepspeech_core.evaluate.kenlm_tools import KenLMToolError, arpa_words, find_tool, write_scorer
from deepspeech_core.evaluate.scorer_package import (
    FST_MAGIC,
    build_trie,
    const_fst_bytes,
    find_package_header,
    package_bytes,
    parse_const_fst,
    trie_words,
)

pytestmark = pytest.mark.unit  # `make test-fast`

ENGLISH = Alphabet(" abcdefghijklmnopqrstuvwxyz'")


def test_trie_is_minimal_sorted_and_reads_back_at_any_offset():
    words = ["cat", "bat", "hat", "cats", "é-clair", "<s>", "</s>", "<unk>", "it's"]
    trie = build_trie(words, ENGLISH)
    # {bat, cat, hat}: one state after the first letter; "cats" and "it's" add a few.
    expected = ["bat", "cat", "cats", "hat", "it's"]  # é-clair cannot be written
    assert trie_words(trie, ENGLISH) == expected
    assert trie.start == 0
    for src, arcs in enumerate(trie.arcs):
        assert [lb for lb, _ in arcs] == sorted(lb for lb, _ in arcs), "ilabel-sorted"
        assert all(dst > src for _, dst in arcs), "topologically numbered"
    small = build_trie(["bat", "cat", "hat"], ENGLISH)
    assert len(small.final) == 5, "shared suffix states merged"
    assert small.n_arcs == 6, "shared suffix states merged"
    # labels are alphabet index + 1 (0 is epsilon), as Scorer::setup_char_map makes them,
    # and every word ends with the space's label (add_word_to_dictionary appends it)
    assert sorted(lb for lb, _ in small.arcs[0]) == [3, 4, 9]
    assert small.arcs[3] == [(1, 4)]
    assert small.final == [False] * 4 + [True]

    for offset in (0, 7, 25, 4093):
        data = b"x" * offset + const_fst_bytes(trie, offset)
        back = parse_const_fst(data, offset)
        assert back.final == trie.final
        assert back.arcs == trie.arcs
        assert trie_words(back, ENGLISH) == expected


def test_const_fst_binary_layout():
    trie = build_trie(["ab", "b"], Alphabet(" ab"))
    offset = 3
    data = const_fst_bytes(trie, offset)
    magic, n = struct.unpack_from("<ii", data, 0)
    assert (magic, n, data[8:13]) == (FST_MAGIC, 5, b"const")
    assert struct.unpack_from("<i", data, 13)[0] == 8
    assert data[17:25] == b"standard"
    version, flags, props, start, n_states, n_arcs = struct.unpack_from("<iiQqqq", data, 25)
    assert (version, flags, start) == (1, 4, 0), "aligned ConstFst version 1, IS_ALIGNED"
    assert props & 0x10000000, "kILabelSorted and kExpanded"
    assert props & 0x1, "kILabelSorted and kExpanded"
    # "ab " and "b ": start -a-> x -b-> y -space-> final, start -b-> y
    assert (n_states, n_arcs) == (4, 4)
    header_end = 25 + 4 + 4 + 8 + 8 + 8 + 8
    states_at = header_end + (-(offset + header_end) % 16)
    assert (offset + states_at) % 16 == 0
    assert set(data[header_end:states_at]) <= {0}
    states = [struct.unpack_from("<fIIII", data, states_at + 20 * i) for i in range(4)]
    assert states[0] == (math.inf, 0, 2, 0, 0), "start: not final, two arcs from 0"
    assert [s[0] for s in states].count(0.0) == 1, "one final state, weight One() = 0"
    arcs_at = states_at + 80 + (-(offset + states_at + 80) % 16)
    arcs = [struct.unpack_from("<iifi", data, arcs_at + 16 * i) for i in range(4)]
    assert arcs[0][:3] == (2, 2, 0.0), "a=2, b=3: sorted"
    assert arcs[1][:3] == (3, 3, 0.0), "a=2, b=3: sorted"
    assert arcs[3][:3] == (1, 1, 0.0), "the space (label 1) ends every word"
    assert len(data) == arcs_at + 64


def test_package_header_follows_the_kenlm_data():
    lm = b"mmap lm http://kheafield.com/code format version 5\0" + bytes(range(256)) * 5
    data = package_bytes(lm, ["abc", "cab"], ENGLISH, 0.75, 1.85)
    assert find_package_header(data) == len(lm)
    magic, version, utf8, alpha, beta = struct.unpack_from("<iib2d", data, len(lm))
    assert data[len(lm) : len(lm) + 4] == b"EIRT"
    assert version == 6
    assert utf8 == 0
    assert (alpha, beta) == (0.75, 1.85)
    assert find_package_header(lm) is None
    utf8_package = package_bytes(lm, ["añb"], None, 1.0, 2.0)
    start = find_package_header(utf8_package)
    assert utf8_package[start + 8] == 1, "bytes output mode flag"
    trie = parse_const_fst(utf8_package, start + 25)
    assert trie_words(trie, None) == ["añb"], "UTF-8 bytes as labels"
    assert trie.n_arcs == 4, "UTF-8 bytes as labels"


@pytest.fixture(scope="module")
def build_binary_tool():
    try:
        return find_tool("build_binary")
    except KenLMToolError as exc:
        pytest.skip(str(exc))


SENTENCES = ["one two three", "three two one", "two two", "one three", "three one two"]


def test_scorer_package_in_the_decoder(tmp_path, build_binary_tool):
    kenlm = pytest.importorskip("kenlm")
    arpa = write_arpa(SENTENCES, tmp_path / "lm.arpa", order=3)
    scorer = tmp_path / "lm.scorer"
    assert write_scorer(arpa, scorer, ENGLISH, alpha=0.5, beta=2.25) == 3
    # KenLM reads the package as the binary it starts with and ignores the rest.
    package_lm, arpa_lm = kenlm.Model(str(scorer)), kenlm.Model(str(arpa))
    for sentence in ("one two three", "three three", "two"):
        assert package_lm.score(sentence) == pytest.approx(arpa_lm.score(sentence), abs=0.02)

    decoder = make_decoder(ENGLISH, DecoderConfig(scorer_path=scorer, beam_width=32))
    assert isinstance(decoder, LMBeamSearchDecoder)
    assert (decoder.alpha, decoder.beta) == (0.5, 2.25), "the package's defaults"
    # the vocabulary reached the beam search's lexicon
    assert sorted(decoder.vocabulary) == sorted(set(arpa_words(arpa)) - {"<s>", "</s>", "<unk>"})
    given = make_decoder(ENGLISH, DecoderConfig(scorer_path=scorer, lm_alpha=1.5, lm_beta=0.0))
    assert (given.alpha, given.beta) == (1.5, 0.0), "flags win over the package"
    plain = make_decoder(ENGLISH, DecoderConfig(scorer_path=arpa))
    assert plain.alpha == DEEPSPEECH_LM_ALPHA, "an ARPA has no defaults: DeepSpeech's"

    # "twu" (u for o) is corrected to the vocabulary word, as with the ARPA.
    text = "one twu"
    logits = np.full((len(text), ENGLISH.n_classes), -4.0, np.float32)
    for t, c in enumerate(text):
        logits[t, ENGLISH.encode(c)[0]] = 2.0
    logits[len("one tw"), ENGLISH.encode("o")[0]] = 1.5
    assert decoder.decode(logits) == "one two"
    with_arpa = make_decoder(ENGLISH, DecoderConfig(scorer_path=arpa, lm_alpha=0.5, lm_beta=2.25))
    assert with_arpa.decode(logits) == decoder.decode(logits)


def test_scorer_built_for_another_alphabet_is_refused(tmp_path, build_binary_tool):
    from deepspeech_core.evaluate.decoders import DecoderError

    arpa = write_arpa(SENTENCES, tmp_path / "lm.arpa", order=2)
    scorer = tmp_path / "lm.scorer"
    write_scorer(arpa, scorer, ENGLISH, 1.0, 1.0)
    with pytest.raises(DecoderError, match="another alphabet"):
        make_decoder(Alphabet(" enotw"), DecoderConfig(scorer_path=scorer))
