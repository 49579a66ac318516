"""KenLM's command-line tools, as DeepSpeech's generate_lm.py runs them.

`build_binary` turns an ARPA model into the KenLM binary a .scorer package starts
with. pip's `kenlm` does not ship it; `make kenlm` compiles it (and `lmplz`) from the
kenlm source distribution into .cache/. It is looked up in $KENLM_BIN, then on PATH,
then in that cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from deepspeech_core.data.alphabet import Alphabet
from deepspeech_core.evaluate.scorer_package import package_bytes, read_scorer
from deepspeech_core.workdir.atomic_files import atomic_write_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KENLM_CACHE = PROJECT_ROOT / ".cache" / "kenlm-0.3.0" / "build" / "bin"


class KenLMToolError(RuntimeError):
    """A KenLM tool is missing or failed; the message says what to do."""


def find_tool(name: str) -> Path:
    """The KenLM program `name` (build_binary, lmplz)."""
    candidates = []
    if os.environ.get("KENLM_BIN"):
        candidates.append(Path(os.environ["KENLM_BIN"]) / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates.append(KENLM_CACHE / name)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise KenLMToolError(
        f"KenLM's {name} was not found: run `make kenlm` in {PROJECT_ROOT} (compiles it into "
        f"{KENLM_CACHE}), or set KENLM_BIN to the directory holding it"
    )


def build_binary(arpa: Path, out: Path, quantize: bool = True) -> Path:
    """`build_binary -a 255 -q 8 -v trie ARPA OUT`: generate_lm.py's settings.

    `-v` leaves the vocabulary strings out of the binary: DeepSpeech reads its trie
    where KenLM's search data ends, so a package's LM must be built without them.
    """
    args = [str(find_tool("build_binary"))]
    if quantize:
        args += ["-a", "255", "-q", "8"]
    args += ["-v", "trie", str(arpa), str(out)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not Path(out).is_file():
        raise KenLMToolError(f"build_binary failed on {arpa}: {done.stderr.strip()[-2000:]}")
    return Path(out)


def arpa_words(arpa: Path) -> list[str]:
    """The 1-gram words of an ARPA file: the vocabulary a scorer's trie holds."""
    words, in_unigrams = [], False
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                in_unigrams = line == "\\1-grams:"
                continue
            if in_unigrams and line:
                words.append(line.split()[1])
    return words


def write_scorer(
    arpa: Path, out: Path, alphabet: Alphabet | None, alpha: float, beta: float
) -> int:
    """A DeepSpeech .scorer from an ARPA model; returns the number of words in its trie.

    generate_lm.py + generate_scorer_package in one step: the KenLM binary, then the
    header with the default alpha/beta and the vocabulary trie (`alphabet` None: bytes
    output mode). Written atomically: a killed run leaves no half package.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    words = arpa_words(arpa)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".scorer-") as tmp:
        binary = build_binary(Path(arpa), Path(tmp) / "lm.binary").read_bytes()
    atomic_write_bytes(out, package_bytes(binary, words, alphabet, alpha, beta))
    return len(read_scorer(out).words(alphabet))
