"""A small synthetic Common Voice release spoken by espeak-ng, for the demo and tests.

Sentences are drawn from a small vocabulary ("Three red cats sleep in the park.") so a
small model learns them in minutes on a CPU; each is spoken by one of several voices at
varied speed and pitch, encoded as 48 kHz mp3 like Common Voice, and listed in tsv
files with the release's columns. The generator ships; the audio does not.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CV_COLUMNS = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accent",
    "locale",
    "segment",
]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
COLORS = ["red", "green", "blue", "yellow", "black", "white", "brown", "pink"]
ANIMALS = ["cats", "dogs", "birds", "fish", "horses", "mice", "foxes", "frogs"]
VERBS = ["run", "jump", "sleep", "swim", "sing", "eat", "play", "hide"]
PLACES = [
    "in the park",
    "on the hill",
    "by the river",
    "at home",
    "under the tree",
    "near the lake",
]
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp"]
VARIANTS = ["m1", "m3", "f2", "f4"]


class DemoCorpusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Utterance:
    sentence: str
    voice: str
    speed: int
    pitch: int


def sentences(count: int, seed: int) -> list[str]:
    """`count` distinct sentence-case sentences with punctuation, reproducible by seed."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        words = [rng.choice(NUMBERS), rng.choice(COLORS), rng.choice(ANIMALS), rng.choice(VERBS)]
        text = " ".join(words) + " " + rng.choice(PLACES)
        end = "!" if rng.random() < 0.1 else "."
        seen[text[0].upper() + text[1:] + end] = None
    return list(seen)


def plan_utterances(count: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed + 1)
    return [
        Utterance(
            sentence=s,
            voice=f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}",
            speed=int(rng.integers(135, 185)),
            pitch=int(rng.integers(30, 70)),
        )
        for s in sentences(count, seed)
    ]


def _require(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise DemoCorpusError(f"{program} is not installed: apt-get install {package}")
    return path


def _speak(utt: Utterance, mp3: Path, espeak: str, sox: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [
                espeak,
                "-v",
                utt.voice,
                "-s",
                str(utt.speed),
                "-p",
                str(utt.pitch),
                "-w",
                str(wav),
                utt.sentence,
            ],
            check=True,
            capture_output=True,
        )
        part = mp3.with_name(mp3.name + ".part.mp3")
        subprocess.run(
            [sox, str(wav), "-r", "48000", "-c", "1", "-C", "48", str(part)],
            check=True,
            capture_output=True,
        )
        part.rename(mp3)


def make_demo_corpus(
    out_dir: Path,
    count: int = 400,
    seed: int = 1,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    workers: int = 4,
) -> Path:
    """Write a Common Voice-style locale directory at out_dir/en; returns that path."""
    espeak, sox = _require("espeak-ng", "espeak-ng"), _require("sox", "sox libsox-fmt-mp3")
    locale_dir = Path(out_dir) / "en"
    clips = locale_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    utterances = plan_utterances(count, seed)
    names = [f"common_voice_en_{i + 1:08d}.mp3" for i in range(len(utterances))]

    def job(i: int) -> None:
        mp3 = clips / names[i]
        if not mp3.is_file():
            _speak(utterances[i], mp3, espeak, sox)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(job, range(len(utterances))))
    except subprocess.CalledProcessError as exc:
        raise DemoCorpusError(
            f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace').strip()} "
            "(mp3 output needs libsox-fmt-mp3)"
        ) from exc

    rows = [
        {
            "client_id": hashlib.sha256(u.voice.encode()).hexdigest(),
            "path": name,
            "sentence": u.sentence,
            "up_votes": 2,
            "down_votes": 0,
            "age": "",
            "gender": "female" if "+f" in u.voice else "male",
            "accent": u.voice.split("+")[0],
            "locale": "en",
            "segment": "",
        }
        for u, name in zip(utterances, names, strict=True)
    ]
    n_test = max(1, int(round(count * test_fraction)))
    n_dev = max(1, int(round(count * dev_fraction)))
    splits = {
        "test": rows[:n_test],
        "dev": rows[n_test : n_test + n_dev],
        "train": rows[n_test + n_dev :],
    }
    return write_release_tables(locale_dir, splits)


def write_release_tables(locale_dir: Path, splits: dict[str, list[dict]]) -> Path:
    """train/dev/test.tsv as Common Voice writes them, plus its other tables.

    `validated.tsv` holds every row of the splits; `invalidated.tsv` and `other.tsv` are
    written empty, so the layout is a release's.
    """
    every_row = [row for rows in splits.values() for row in rows]
    tables = {**splits, "validated": every_row, "invalidated": [], "other": []}
    for name, rows in tables.items():
        pd.DataFrame(rows, columns=CV_COLUMNS).to_csv(
            locale_dir / f"{name}.tsv", sep="\t", index=False
        )
    return locale_dir
