"""A word n-gram language model in ARPA format, built from transcripts.

DeepSpeech builds its scorer with KenLM's `lmplz`, a C++ program that pip's `kenlm`
does not ship. For a corpus's own transcripts (the usual first LM: "what people say to
this model") an absolute-discounting backoff model is enough and needs no binary; the
ARPA file it writes loads in KenLM (and so in `--scorer_path`). For a large text
corpus, use lmplz and pass its ARPA or binary instead.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from deepspeech_core.workdir.atomic_files import atomic_write_text

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Gram = tuple[str, ...]


def _counts(sentences: Iterable[str], order: int) -> list[Counter[Gram]]:
    counts: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                gram = tuple(words[i : i + n])
                if gram != (BOS,):
                    counts[n - 1][gram] += 1
    return counts


def build_arpa(sentences: Iterable[str], order: int = 3, discount: float = 0.5) -> str:
    """ARPA text of an absolute-discounting backoff model of `order` over `sentences`.

    Seen n-grams keep (count - discount) / history count; the discounted mass goes to
    the lower order through the history's backoff weight, normalised so every
    conditional distribution sums to one (Katz backoff with absolute discounting).
    """
    if order < 1 or not 0 < discount < 1:
        raise ValueError("order must be >= 1 and discount in (0, 1)")
    counts = _counts(sentences, order)
    if not counts[0]:
        raise ValueError("no words to build a language model from")
    total = sum(counts[0].values())
    vocab = len(counts[0])
    probs: list[dict[Gram, float]] = [{}]
    probs[0] = {g: (c - discount) / total for g, c in counts[0].items()}
    probs[0][(UNK,)] = discount * vocab / total
    backoffs: list[dict[Gram, float]] = [{} for _ in range(order)]

    def prob(word: str, history: Gram) -> float:
        """P(word | history) of the model built so far (orders up to len(history) + 1)."""
        gram = (*history, word)
        if gram in probs[len(history)]:
            return probs[len(history)][gram]
        if not history:
            return probs[0][(UNK,)]
        return backoffs[len(history) - 1].get(history, 1.0) * prob(word, history[1:])

    for n in range(2, order + 1):
        followers: dict[Gram, list[Gram]] = defaultdict(list)
        for gram in counts[n - 1]:
            followers[gram[:-1]].append(gram)
        level: dict[Gram, float] = {}
        for history, grams in followers.items():
            history_count = sum(counts[n - 1][g] for g in grams)
            for g in grams:
                level[g] = (counts[n - 1][g] - discount) / history_count
            kept = sum(level[g] for g in grams)
            lower = sum(prob(g[-1], history[1:]) for g in grams)
            backoffs[n - 2][history] = (1.0 - kept) / max(1.0 - lower, 1e-12)
        probs.append(level)
    return _format(probs, backoffs)


def _format(probs: list[dict[Gram, float]], backoffs: list[dict[Gram, float]]) -> str:
    order = len(probs)
    sizes = [len(p) + (1 if n == 0 else 0) for n, p in enumerate(probs)]  # + <s>
    lines = ["", "\\data\\", *(f"ngram {n + 1}={size}" for n, size in enumerate(sizes))]
    for n in range(order):
        lines += ["", f"\\{n + 1}-grams:"]
        entries = dict(probs[n])
        if n == 0:
            entries[(BOS,)] = 0.0
        for gram in sorted(entries):
            p = entries[gram]
            logp = -99.0 if gram == (BOS,) else math.log10(p)
            line = f"{logp:.6f}\t{' '.join(gram)}"
            if n < order - 1:
                line += f"\t{math.log10(backoffs[n].get(gram, 1.0)):.6f}"
            lines.append(line)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def write_arpa(sentences: Iterable[str], path: Path, order: int = 3) -> Path:
    """Write `build_arpa(sentences, order)` to `path` (atomically)."""
    atomic_write_text(Path(path), build_arpa(sentences, order))
    return Path(path)
