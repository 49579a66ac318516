"""CTC decoders: greedy, beam search, and beam search with a KenLM language model.

Decoders take one utterance's logits [time, classes] (the blank is the last class, as in
DeepSpeech) and return text. Greedy is the best path (argmax per frame). The beam searches were
chosen on measurements (bench/decoding.py, docs/PERFORMANCE.md): without a language
model fast-ctc-decode's prefix beam search (Rust), with one flashlight-text's lexicon
beam search (C++) over a KenLM model (a DeepSpeech .scorer package or an ARPA
file), which writes only words of the vocabulary, as DeepSpeech's trie-constrained
decoder does: the .scorer's vocabulary trie (or the ARPA's unigrams) spells each word as
its characters and the space that ends it. Scores mean what DeepSpeech's lm_alpha/lm_beta
mean: score = ln P(acoustic) + alpha * ln P_LM(words) + beta * words (flashlight scores
KenLM in log10, so its weight is alpha * ln 10). A bare KenLM binary has no word list
for the lexicon: it goes to pyctcdecode's free-form beam search, as before.

In bytes output mode the decoders work on bytes and return the UTF-8 text they spell:
greedy and LM-free beam search only extend along valid UTF-8 and drop an incomplete
last character (`utf8_decoding`); with a scorer, pyctcdecode's search is not
constrained and bytes that are not UTF-8 are dropped from its text. The word language
model scores the decoded words, so it applies to languages written with spaces between
words.
"""

from __future__ import annotations

import importlib
import logging
import math
import multiprocessing
import os
import re
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from deepspeech_core.config import DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA, DecoderConfig
from deepspeech_core.data.alphabet import Alphabet, text_from_label_string
from deepspeech_core.evaluate.scorer_package import ScorerError, is_scorer_package, read_scorer
from deepspeech_core.evaluate.utf8_decoders import (
    Utf8BeamSearchDecoder,
    utf8_greedy_labels,
    utf8_text,
)

log = logging.getLogger(__name__)

# flashlight scores KenLM in log10 (KenLM's BaseScore), DeepSpeech in ln: lm_weight =
# alpha / log10(e) = alpha * ln 10 gives a DeepSpeech lm_alpha its meaning.
LN_10 = math.log(10.0)
# DeepSpeech's cutoff_top_n: only a frame's 40 likeliest classes extend the beams.
TOP_CLASSES = 40
# Beams more than this (ln probability) below the frame's best are dropped; DeepSpeech
# keeps them until the beam is full, but none of them wins (bench/decoding.py: same WER
# at 10, 15, 25 and 50; 15 is 4x faster than 50 on a trained model's logits).
BEAM_THRESHOLD = 15.0
# No look-ahead of the LM inside a word (flashlight's "smearing"): DeepSpeech scores a
# word when its space comes, and so do we (the same WER as MAX here, and faster).
SMEARING = "NONE"
# DeepSpeech's decoder starts at the first frame whose blank probability is below 0.999.
START_EXPANDING = math.log(0.999)
# The LM-free search: a frame's labels below this probability extend no beam.
PRUNE_PROBABILITY = 1e-3
# A frame that says "space" with certainty, added after the last one with a language
# model: it closes the last word, so it is a vocabulary word scored with alpha and beta,
# as DeepSpeech scores the last word of each beam at the end (DecoderState::decode).
_CERTAIN, _IMPOSSIBLE = 0.0, -1e4


class DecoderError(ValueError):
    """A decoder cannot be built as asked; the message says what to do."""


class Decoder(Protocol):
    name: str
    alphabet: Alphabet

    @property
    def config(self) -> DecoderConfig:
        """What rebuilds this decoder elsewhere (DecoderPool's worker processes)."""

    def decode(self, logits: np.ndarray) -> str:
        """Text of one utterance from its logits [time, classes]."""


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass
class GreedyDecoder:
    """Best path: the most likely class per frame, repeats merged, blanks dropped."""

    alphabet: Alphabet
    name: str = "greedy"

    @property
    def config(self) -> DecoderConfig:
        return DecoderConfig(beam_width=1)

    def decode(self, logits: np.ndarray) -> str:
        if self.alphabet.bytes_output_mode:
            return utf8_text(utf8_greedy_labels(logits))
        best = np.asarray(logits).argmax(axis=-1)
        keep = np.ones_like(best, bool)
        keep[1:] = best[1:] != best[:-1]
        return self.alphabet.decode(int(c) for c in best[keep] if c != self.alphabet.blank_index)


def _beam_search_library(module: str, package: str):
    """A declared decoder dependency, or an error that says how to get it or avoid it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DecoderError(
            f"the beam search needs {package}: pip install {package} "
            "(make setup installs it), or use --beam_width 1 (greedy)"
        ) from e


def _flashlight():
    return _beam_search_library("flashlight.lib.text.decoder", "flashlight-text")


def _space_index(alphabet: Alphabet) -> int | None:
    return None if alphabet.missing(" ") else int(alphabet.encode(" ")[0])


def _text(tokens, alphabet: Alphabet) -> str:
    """CTC's map from frames to labels (repeats merged, blanks dropped), as text.

    flashlight's hypotheses start and end with the word separator (the space) and may
    repeat it between words; DeepSpeech's never do, so the spaces are normalised.
    """
    labels, previous = [], None
    for token in tokens:
        if token != previous and 0 <= token < alphabet.blank_index:
            labels.append(token)
        previous = token
    return re.sub(" {2,}", " ", alphabet.decode(labels)).strip(" ")


def _emissions(logits: np.ndarray, closing: int | None = None) -> np.ndarray:
    """Log probabilities, C-contiguous float32 (flashlight reads the raw buffer); with
    `closing`, one more frame where that class is certain."""
    log_probs = _log_softmax(np.asarray(logits, np.float32))
    log_probs = log_probs[_first_sound(log_probs) :]
    if not len(log_probs):
        return log_probs
    if closing is not None:
        last = np.full((1, log_probs.shape[1]), _IMPOSSIBLE, np.float32)
        last[0, closing] = _CERTAIN
        log_probs = np.concatenate([log_probs, last])
    return np.ascontiguousarray(log_probs, np.float32)


def _first_sound(log_probs: np.ndarray) -> int:
    """The first frame whose blank is below 0.999: DeepSpeech's decoder expands no beam
    before it (`start_expanding_`), so a clip that is all blank decodes to nothing."""
    sound = np.flatnonzero(log_probs[:, -1] < START_EXPANDING)
    return int(sound[0]) if len(sound) else len(log_probs)


class BeamSearchDecoder:
    """CTC prefix beam search without a language model: fast-ctc-decode's (Rust).

    Labels whose probability in a frame is below `PRUNE_PROBABILITY` do not extend the
    beams there (bench/decoding.py: the same WER as TensorFlow's search, 10x faster).
    """

    name = "beam"

    def __init__(self, alphabet: Alphabet, beam_width: int) -> None:
        fast_ctc_decode = _beam_search_library("fast_ctc_decode", "fast-ctc-decode")
        self._search = fast_ctc_decode.beam_search
        self.alphabet, self.beam_width = alphabet, beam_width
        self._labels = ["\0", *alphabet.characters]  # its blank comes first
        # (it refuses a threshold that could prune every label of a frame)
        self._prune = min(PRUNE_PROBABILITY, 0.5 / len(self._labels))

    @property
    def config(self) -> DecoderConfig:
        return DecoderConfig(beam_width=self.beam_width)

    def decode(self, logits: np.ndarray) -> str:
        log_probs = _emissions(logits)
        if not len(log_probs):
            return ""
        probs = np.exp(log_probs)
        probs = np.ascontiguousarray(np.concatenate([probs[:, -1:], probs[:, :-1]], axis=1))
        text, _ = self._search(
            probs, self._labels, beam_size=self.beam_width, beam_cut_threshold=self._prune
        )
        return text_from_label_string(text, self.alphabet)


def _arpa_words(path: Path) -> list[str]:
    """The unigrams of an ARPA file (its vocabulary), without <s>, </s>, <unk>."""
    words, in_unigrams = [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                if in_unigrams:
                    break
                in_unigrams = line == "\\1-grams:"
                continue
            fields = line.split("\t")
            if in_unigrams and len(fields) >= 2 and fields[1] not in ("<s>", "</s>", "<unk>"):
                words.append(fields[1])
    return words


def _vocabulary(scorer_path: Path, alphabet: Alphabet):
    """(words or None, (alpha, beta) of a .scorer's header or None)."""
    if is_scorer_package(scorer_path):
        try:
            package = read_scorer(scorer_path)
            return package.words(alphabet), (package.alpha, package.beta)
        except ScorerError as e:
            raise DecoderError(f"--scorer_path {scorer_path}: {e}") from e
    if _is_arpa(scorer_path):
        return _arpa_words(scorer_path), None
    return None, None


def _not_a_language_model(scorer_path: Path, error: Exception) -> DecoderError:
    return DecoderError(
        f"--scorer_path {scorer_path} is not a .scorer package, an ARPA file or a "
        f"KenLM binary ({error}): pass DeepSpeech's .scorer, or the lm.binary or ARPA "
        "that generate_lm.py or build-lm made"
    )


def _weights(alpha, beta, defaults) -> tuple[float, float]:
    """Given alpha/beta win, else the .scorer's defaults, else DeepSpeech's (as 0.9.3)."""
    default_alpha, default_beta = defaults or (DEEPSPEECH_LM_ALPHA, DEEPSPEECH_LM_BETA)
    return (default_alpha if alpha is None else alpha, default_beta if beta is None else beta)


class _WordModelSettings:
    """What rebuilds a language-model decoder in a worker process (DecoderPool)."""

    beam_width: int
    scorer_path: Path
    alpha: float
    beta: float

    @property
    def config(self) -> DecoderConfig:
        return DecoderConfig(
            beam_width=self.beam_width,
            scorer_path=self.scorer_path,
            lm_alpha=self.alpha,
            lm_beta=self.beta,
        )


class LMBeamSearchDecoder(_WordModelSettings):
    """Lexicon-constrained CTC beam search with a KenLM word model (flashlight-text).

    As DeepSpeech's decoder with a scorer: every word is spelled as a path of the
    vocabulary trie (its characters, then the space that ends it), the language model
    scores each finished word (alpha * ln P + beta), and words outside the vocabulary
    are never written. alpha/beta None: the .scorer's defaults, else DeepSpeech's.
    """

    name = "beam+lm"

    def __init__(
        self,
        alphabet: Alphabet,
        scorer_path: Path,
        beam_width: int,
        alpha: float | None = None,
        beta: float | None = None,
        words: list[str] | None = None,
        defaults: tuple[float, float] | None = None,
    ) -> None:
        scorer_path = Path(scorer_path)
        space = _check_scorer(alphabet, scorer_path)
        if words is None:
            words, defaults = _vocabulary(scorer_path, alphabet)
            if words is None:
                raise DecoderError(
                    f"{scorer_path} has no vocabulary (a bare KenLM binary): pass the "
                    ".scorer package or the ARPA file"
                )
        fl = _flashlight()
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        words = [w for w in dict.fromkeys(words) if w and not alphabet.missing(w + " ")]
        if not words:
            raise DecoderError(
                f"no word of {scorer_path}'s vocabulary can be written with the model's "
                "alphabet: build the language model from transcripts in this alphabet"
            )
        self.vocabulary = words
        self._dictionary = Dictionary([*words, "<unk>"])
        try:
            self._lm = KenLM(str(scorer_path), self._dictionary)
        except (RuntimeError, ValueError, OSError) as e:
            raise _not_a_language_model(scorer_path, e) from e
        self._trie = fl.Trie(alphabet.n_classes, space)
        start = self._lm.start(False)
        for index, word in enumerate(words):
            _, unigram = self._lm.score(start, index)
            self._trie.insert([int(c) for c in alphabet.encode(word + " ")], index, unigram)
        self._trie.smear(getattr(fl.SmearingMode, SMEARING))
        self.alphabet, self.scorer_path, self.beam_width = alphabet, scorer_path, beam_width
        self._space, self._fl = space, fl
        self.alpha, self.beta = _weights(alpha, beta, defaults)
        self._build()

    def _build(self) -> None:
        fl = self._fl
        options = fl.LexiconDecoderOptions(
            beam_size=self.beam_width,
            beam_size_token=min(TOP_CLASSES, self.alphabet.n_classes),
            beam_threshold=BEAM_THRESHOLD,
            lm_weight=self.alpha * LN_10,
            word_score=self.beta,
            unk_score=-math.inf,
            sil_score=0.0,
            log_add=True,
            criterion_type=fl.CriterionType.CTC,
        )
        self._decoder = fl.LexiconDecoder(
            options,
            self._trie,
            self._lm,
            self._space,
            self.alphabet.blank_index,
            self._dictionary.get_index("<unk>"),
            [],
            False,
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """New lm_alpha/lm_beta; the model and vocabulary stay loaded (tune-lm's trials)."""
        self.alpha, self.beta = alpha, beta
        self._build()

    def decode(self, logits: np.ndarray) -> str:
        emissions = _emissions(logits, closing=self._space)
        if not len(emissions):
            return ""
        best = self._decoder.decode(emissions.ctypes.data, *emissions.shape)[0]
        return _text(best.tokens, self.alphabet)


def _check_scorer(alphabet: Alphabet, scorer_path: Path) -> int:
    """The space's label; refuses a missing scorer or an alphabet without a space."""
    if not scorer_path.is_file():
        raise DecoderError(f"--scorer_path {scorer_path} does not exist")
    space = _space_index(alphabet)
    if space is None:
        raise DecoderError("a word language model needs the space in the alphabet")
    return space


@dataclass
class TensorFlowBeamSearchDecoder:
    """TensorFlow's CTC beam search, no language model (the decoder before flashlight;
    bench/decoding.py compares against it)."""

    alphabet: Alphabet
    beam_width: int
    name: str = "beam(tensorflow)"

    def decode(self, logits: np.ndarray) -> str:
        import tensorflow as tf

        logits = np.asarray(logits, np.float32)
        decoded, _ = tf.nn.ctc_beam_search_decoder(
            logits[:, np.newaxis, :], [logits.shape[0]], beam_width=self.beam_width, top_paths=1
        )
        return self.alphabet.decode(int(v) for v in decoded[0].values.numpy())


class PyctcdecodeLMDecoder(_WordModelSettings):
    """pyctcdecode's free-form beam search over a KenLM model: for a bare KenLM binary,
    whose vocabulary is unknown (partial words are not checked against a word list).

    alpha/beta None: the .scorer's defaults, else DeepSpeech's (as DeepSpeech 0.9.3).
    """

    name = "beam+lm(pyctcdecode)"

    def __init__(
        self,
        alphabet: Alphabet,
        scorer_path: Path,
        beam_width: int,
        alpha: float | None = None,
        beta: float | None = None,
    ) -> None:
        import kenlm
        from pyctcdecode import Alphabet as LabelSet
        from pyctcdecode import BeamSearchDecoderCTC, LanguageModel
        from pyctcdecode.alphabet import verify_alphabet_coverage

        scorer_path = Path(scorer_path)
        _check_scorer(alphabet, scorer_path)
        try:
            language_model = kenlm.Model(str(scorer_path))
        except (OSError, RuntimeError) as e:
            raise _not_a_language_model(scorer_path, e) from e
        labels = LabelSet.build_alphabet([*alphabet.characters, ""])
        unigrams, defaults = _vocabulary(scorer_path, alphabet)
        if alphabet.bytes_output_mode:
            language_model = _BytesWordModel(language_model)
            if unigrams is not None:
                unigrams = [_byte_string(w) for w in unigrams]
        if unigrams is not None:
            verify_alphabet_coverage(labels, unigrams)
        self.alpha, self.beta = _weights(alpha, beta, defaults)
        self.beam_width, self.alphabet, self.scorer_path = beam_width, alphabet, scorer_path
        self._decoder = BeamSearchDecoderCTC(
            labels, LanguageModel(language_model, unigrams, alpha=self.alpha, beta=self.beta)
        )

    def set_weights(self, alpha: float, beta: float) -> None:
        """New lm_alpha/lm_beta without reloading the model (tune-lm's trials)."""
        self._decoder.reset_params(alpha=alpha, beta=beta)
        self.alpha, self.beta = alpha, beta

    def decode(self, logits: np.ndarray) -> str:
        text = self._decoder.decode(
            _log_softmax(np.asarray(logits, np.float32)), beam_width=self.beam_width
        )
        return text_from_label_string(text, self.alphabet)


def _byte_string(word: str) -> str:
    """`word` as bytes-mode label characters (one Latin-1 stand-in per UTF-8 byte)."""
    return word.encode("utf-8").decode("latin-1")


class _BytesWordModel:
    """A KenLM model seen through bytes-mode labels: pyctcdecode builds words out of
    byte stand-ins, the model knows them as UTF-8 text; this translates each word."""

    def __init__(self, model) -> None:
        self._model = model
        self.order = model.order
        self.path = model.path

    def BeginSentenceWrite(self, state) -> None:  # noqa: N802 - KenLM's API
        self._model.BeginSentenceWrite(state)

    def NullContextWrite(self, state) -> None:  # noqa: N802
        self._model.NullContextWrite(state)

    def BaseScore(self, state, word: str, out_state) -> float:  # noqa: N802
        return self._model.BaseScore(state, _utf8(word), out_state)

    def __contains__(self, word: str) -> bool:
        return _utf8(word) in self._model


def _utf8(word: str) -> str:
    return word.encode("latin-1").decode("utf-8", errors="replace")


def _is_arpa(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4096).lstrip().startswith(b"\\data\\")


def make_lm_decoder(
    alphabet: Alphabet,
    scorer_path: Path,
    beam_width: int,
    alpha: float | None = None,
    beta: float | None = None,
) -> LMBeamSearchDecoder | PyctcdecodeLMDecoder:
    """The beam search with a language model: lexicon-constrained when the scorer has a
    vocabulary (.scorer trie, ARPA unigrams), pyctcdecode's for a bare KenLM binary."""
    scorer_path = Path(scorer_path)
    _check_scorer(alphabet, scorer_path)
    words, defaults = _vocabulary(scorer_path, alphabet)
    if words is None:
        log.warning(
            "%s is a KenLM binary: without the ARPA's word list (or a .scorer's trie) the "
            "beam search cannot keep to the vocabulary (pass a .scorer or the ARPA for the "
            "best accuracy and speed)",
            scorer_path,
        )
        return PyctcdecodeLMDecoder(alphabet, scorer_path, beam_width, alpha, beta)
    return LMBeamSearchDecoder(alphabet, scorer_path, beam_width, alpha, beta, words, defaults)


def make_decoder(alphabet: Alphabet, cfg: DecoderConfig) -> Decoder:
    """The decoder `cfg` asks for: greedy when beam_width <= 1, else beam, +LM with a scorer."""
    if cfg.scorer_path is not None:
        return make_lm_decoder(alphabet, cfg.scorer_path, cfg.beam_width, cfg.lm_alpha, cfg.lm_beta)
    if cfg.beam_width <= 1:
        return GreedyDecoder(alphabet)
    if alphabet.bytes_output_mode:
        return Utf8BeamSearchDecoder(alphabet, cfg.beam_width)
    return BeamSearchDecoder(alphabet, cfg.beam_width)


# --- decoding in worker processes -----------------------------------------------------

_worker_decoder: Decoder | None = None


def _start_worker(alphabet: Alphabet, cfg: DecoderConfig) -> None:
    global _worker_decoder
    _worker_decoder = make_decoder(alphabet, cfg)


def _decode_in_worker(clips: list[np.ndarray]) -> list[str]:
    assert _worker_decoder is not None, "the worker's initializer did not run"
    return [_worker_decoder.decode(c) for c in clips]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class DecoderPool:
    """`workers` processes, each with its own copy of a decoder (`decoder.config`), that
    decode lists of clips: a beam search is single-threaded C++ holding the GIL, so
    parallel decoding needs processes. Spawned, not forked: the parent runs TensorFlow,
    whose threads a fork would copy in an unknown state."""

    def __init__(self, decoder: Decoder, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(decoder.alphabet, decoder.config),
        )

    def submit(self, clips: list[np.ndarray]) -> Future:
        return self._pool.submit(_decode_in_worker, clips)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
