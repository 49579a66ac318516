"""Small Common Voice-layout corpora in several scripts, spoken by espeak-ng.

The English demo corpus cannot show what happens to Cyrillic, Devanagari, Arabic,
Greek or Han text on its way to a model; these can. Each language has a small
vocabulary (the numbers one to ten and a few words with the script's special
characters: ß and umlauts, Devanagari vowel signs and candrabindu, Arabic harakat,
Greek final sigma and tonos, Russian ё) and sentences are written as Common Voice
writes them: capitalised, with the script's own punctuation. The generator ships, the
audio does not; mp3 encoding, voices and tsv columns follow `demo_corpus`.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepspeech_core.data.demo_corpus import Utterance, _require, _speak, write_release_tables


@dataclass(frozen=True)
class Language:
    """How espeak-ng speaks a language and how its sentences are written."""

    voice: str
    words: tuple[str, ...]
    comma: str = ","
    endings: tuple[str, ...] = (".", "!", "?")
    separator: str = " "  # Mandarin writes no spaces between words


LANGUAGES: dict[str, Language] = {
    "ru": Language(
        "ru",
        tuple(
            "один два три четыре пять шесть семь восемь девять десять ёж ёлка".split()
            + ["Привет", "мир"]
        ),
    ),
    "de": Language(
        "de",
        tuple(
            "eins zwei drei vier fünf sechs sieben acht neun zehn Straße Grüße schön Bär".split()
        ),
    ),
    "hi": Language(
        "hi",
        tuple("एक दो तीन चार पाँच छह सात आठ नौ दस नमस्ते दुनिया".split()),
        endings=("।", "?"),
    ),
    "ar": Language(
        "ar",
        tuple("واحد اثنان ثلاثة أربعة خمسة ستة سبعة ثمانية تسعة عشرة مَرْحَبًا بِالعالم".split()),
        comma="،",
        endings=(".", "؟"),
    ),
    "el": Language(
        "el",
        tuple("ένα δύο τρεις τέσσερις πέντε έξι επτά οκτώ εννέα δέκα Καλημέρα κόσμε".split()),
        endings=(".", "!", ";"),
    ),
    "cmn": Language(
        "cmn",
        # 四 (E5 9B 9B) repeats a byte, which greedy decoding needs a blank between: last
        tuple("一 二 三 五 六 七 八 九 十 四 你好 世界".split()),
        comma="，",
        endings=("。", "！", "？"),
        separator="",
    ),
}


def sentences(
    language: str,
    count: int,
    seed: int,
    words: int = 3,
    distinct: bool = True,
    vocabulary: int | None = None,
) -> list[str]:
    """`count` sentences of `words` words, as Common Voice writes them.

    The first sentences go through the whole vocabulary once, so that a training split
    taken from the start holds every character the others use. Sentences are distinct
    unless `distinct` is false (one-word corpora: the same word by other voices).
    `vocabulary` keeps only the first words of the language's list (a quicker task).
    """
    lang = LANGUAGES[language]
    vocab = lang.words[:vocabulary] if vocabulary else lang.words
    rng = np.random.default_rng(seed)
    tour = [str(w) for w in rng.permutation(vocab)]
    tour += [str(w) for w in rng.choice(vocab, size=-len(tour) % words, replace=False)]
    seen: dict[str, None] = {}
    out: list[str] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > count * 100:
            raise ValueError(f"cannot make {count} distinct {language} sentences of {words}")
        chosen = [str(w) for w in rng.choice(vocab, size=words, replace=False)]
        if tour:
            chosen, tour = tour[:words], tour[words:]
        if rng.random() < 0.3:
            chosen[0] = chosen[0] + lang.comma
        text = lang.separator.join(chosen)
        sentence = text[0].upper() + text[1:] + str(rng.choice(lang.endings))
        if distinct and sentence in seen:
            continue
        seen[sentence] = None
        out.append(sentence)
    return out


def _utterance_id(utt: Utterance) -> str:
    return hashlib.sha256(repr(utt).encode()).hexdigest()[:16]


def make_language_corpus(
    out_dir: Path,
    language: str,
    count: int = 12,
    seed: int = 1,
    dev: int = 1,
    test: int = 1,
    words: int = 3,
    distinct: bool = True,
    vocabulary: int | None = None,
    workers: int = 2,
) -> Path:
    """Write a Common Voice locale directory at out_dir/<language>; returns that path.

    Clips vary in speed and pitch; the last `test` rows are the test split, the `dev`
    before them the dev split, the rest (which covers the vocabulary) train.
    """
    if language not in LANGUAGES:
        raise ValueError(f"no corpus recipe for {language!r}: choose from {sorted(LANGUAGES)}")
    espeak, sox = _require("espeak-ng", "espeak-ng"), _require("sox", "sox libsox-fmt-mp3")
    lang = LANGUAGES[language]
    locale_dir = Path(out_dir) / language
    clips = locale_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    utterances = [
        Utterance(s, lang.voice, int(rng.integers(130, 175)), int(rng.integers(30, 70)))
        for s in sentences(language, count, seed, words, distinct, vocabulary)
    ]
    # named by what is spoken, so a corpus made again with other settings never reuses
    # a clip of a different sentence
    names = [f"common_voice_{language}_{_utterance_id(u)}.mp3" for u in utterances]

    def job(i: int) -> None:
        if not (clips / names[i]).is_file():
            _speak(utterances[i], clips / names[i], espeak, sox)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(job, range(count)))
    rows = [
        {
            "client_id": hashlib.sha256(f"{u.voice}{u.pitch}".encode()).hexdigest(),
            "path": name,
            "sentence": u.sentence,
            "up_votes": 2,
            "down_votes": 0,
            "age": "",
            "gender": "",
            "accent": "",
            "locale": language,
            "segment": "",
        }
        for u, name in zip(utterances, names, strict=True)
    ]
    n_train = count - dev - test
    if n_train < 1:
        raise ValueError(f"count {count} leaves no training clips after {dev} dev + {test} test")
    splits = {
        "train": rows[:n_train],
        "dev": rows[n_train : n_train + dev],
        "test": rows[n_train + dev :],
    }
    return write_release_tables(locale_dir, splits)
