"""DeepSpeech 0.9.3 `.scorer` packages: read them, and write ones libdeepspeech loads.

A package (what `generate_scorer_package` writes, read by `Scorer::load_lm`) is

    a KenLM binary built without its vocabulary (`build_binary -v`); KenLM reads it and
      ignores what follows, and DeepSpeech finds the rest where KenLM's search data ends
    int32 magic 'TRIE', int32 version 6, bool utf8 mode, double alpha, double beta
      (the default lm_alpha/lm_beta of the package)
    the vocabulary as an OpenFST ConstFst<StdArc> acceptor, written aligned
      (`FstWriteOptions.align`): a trie of the words' labels (alphabet index + 1, or the
      UTF-8 bytes in bytes-output mode), determinised and minimised, arcs sorted

The ConstFst layout is OpenFST 1.6.7's (DeepSpeech's third_party copy), fst.h/const-fst.h:
an FstHeader (int32 magic 2125659606, string "const", string "standard", int32 version
1 = aligned, int32 flags 4 = IS_ALIGNED, uint64 properties, int64 start, int64 number of
states, int64 number of arcs; strings are int32 length + bytes), zero padding to a
16-byte file offset, one 20-byte state per state (float final weight, uint32 first arc,
uint32 arcs, uint32 input epsilons, uint32 output epsilons), padding, one 16-byte arc
per arc (int32 ilabel, int32 olabel, float weight, int32 next state). Little-endian, as
the x86-64 and arm64 clients read it. No OpenFST binding installs on Python 3.11, and
the format is small, so it is read and written here.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from deepspeech_core.data.alphabet import Alphabet

MAGIC = struct.unpack("<i", b"EIRT")[0]  # the int32 literal 'TRIE' as C++ stores it
FILE_VERSION = 6
FST_MAGIC = 2125659606
ALIGNMENT = 16  # MappedFile::kArchAlignment
FST_ALIGNED_VERSION = 1  # ConstFstImpl::kAlignedFileVersion, written when opts.align
IS_ALIGNED = 0x4
_HEADER = struct.Struct("<iib2d")  # magic, version, utf8 flag, alpha, beta: 25 bytes
_STATE = struct.Struct("<fIIII")
_ARC = struct.Struct("<iifi")
_FST_PREFIX = struct.pack("<ii", FST_MAGIC, 5) + b"const" + struct.pack("<i", 8) + b"standard"
_PACKAGE = re.compile(
    re.escape(b"EIRT") + b"....[\x00\x01].{16}" + re.escape(_FST_PREFIX), re.DOTALL
)
SPECIAL_WORDS = ("<s>", "</s>", "<unk>")

# OpenFST property bits (properties.h) for what the trie is known to be.
_PROPS = {
    "expanded": 0x1,
    "acceptor": 0x10000,
    "i_deterministic": 0x40000,
    "o_deterministic": 0x100000,
    "no_epsilons": 0x800000,
    "no_i_epsilons": 0x2000000,
    "no_o_epsilons": 0x8000000,
    "i_label_sorted": 0x10000000,
    "o_label_sorted": 0x40000000,
    "unweighted": 0x200000000,
    "acyclic": 0x800000000,
    "initial_acyclic": 0x2000000000,
    "top_sorted": 0x4000000000,
    "accessible": 0x10000000000,
    "coaccessible": 0x40000000000,
    "string": 0x100000000000,
    "not_string": 0x200000000000,
    "unweighted_cycles": 0x800000000000,
}


class ScorerError(ValueError):
    """A scorer package is malformed or does not fit the model; says what to do."""


@dataclass
class Trie:
    """An acceptor: per state, whether it is final and its arcs (label, next state)."""

    start: int
    final: list[bool]
    arcs: list[list[tuple[int, int]]]
    properties: int = 0

    @property
    def n_arcs(self) -> int:
        return sum(len(a) for a in self.arcs)


@dataclass
class ScorerPackage:
    """What a .scorer holds besides the KenLM model."""

    path: Path
    lm_end: int  # where KenLM's data ends and the header starts
    utf8: bool
    alpha: float
    beta: float
    trie: Trie = field(repr=False)

    def words(self, alphabet: Alphabet | None) -> list[str]:
        """The vocabulary, decoded with the model's alphabet (bytes mode: UTF-8)."""
        return trie_words(self.trie, None if self.utf8 else alphabet)


def labels_for(word: str, alphabet: Alphabet | None) -> list[int] | None:
    """DeepSpeech's trie labels of `word`, as `add_word_to_dictionary` makes them.

    Alphabet mode: alphabet index + 1 per character, then the space's (a word in the
    trie ends with the space that ends it in the transcript; the decoder matches the
    space against it). Bytes mode: the UTF-8 bytes. None if a character is not in the
    alphabet (such words are left out, as DeepSpeech does).
    """
    if alphabet is None:
        return list(word.encode("utf-8"))
    if alphabet.missing(word):
        return None
    return [int(i) + 1 for i in alphabet.encode(word + " ")]


def build_trie(words, alphabet: Alphabet | None) -> Trie:
    """The minimal deterministic acceptor of the words' label sequences.

    `fill_dictionary` builds a trie, then Determinize and Minimize; for a set of
    strings the minimal DFA is the trie with equivalent suffix states merged, which is
    what the bottom-up signature merge below computes. States are numbered in
    topological order from the start (0) and arcs sorted by label, so SortedMatcher
    (the decoder's matcher) can use them.
    """
    if alphabet is not None and " " not in alphabet.characters:
        raise ScorerError("a word scorer needs the space in the alphabet (it ends every word)")
    children: list[dict[int, int]] = [{}]
    final = [False]
    for word in sorted(set(words)):
        if word in SPECIAL_WORDS or not word:
            continue
        labels = labels_for(word, alphabet)
        if labels is None:
            continue
        node = 0
        for label in labels:
            if label not in children[node]:
                children[node][label] = len(children)
                children.append({})
                final.append(False)
            node = children[node][label]
        final[node] = True
    if len(children) == 1:
        raise ScorerError("no word of the vocabulary can be written with the alphabet")
    return _number(*_merge(children, final))


def _merge(children: list[dict[int, int]], final: list[bool]):
    """Merge states with the same right language (same finality and merged children)."""
    canonical: dict[tuple, int] = {}
    rep = [0] * len(children)
    order: list[int] = []  # post-order: children before parents
    stack = [(0, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children[node].values())
    for node in order:
        signature = (final[node], tuple(sorted((lb, rep[c]) for lb, c in children[node].items())))
        rep[node] = canonical.setdefault(signature, node)
    kept = {rep[n] for n in order}
    arcs = {n: sorted((lb, rep[c]) for lb, c in children[n].items()) for n in kept}
    return rep[0], {n: final[n] for n in kept}, arcs


def _number(start: int, final: dict[int, bool], arcs: dict[int, list[tuple[int, int]]]) -> Trie:
    """Renumber states in topological order (Kahn's algorithm from the start)."""
    incoming = dict.fromkeys(final, 0)
    for out in arcs.values():
        for _, dst in out:
            incoming[dst] += 1
    queue, order = deque([start]), []
    while queue:
        node = queue.popleft()
        order.append(node)
        for _, dst in arcs[node]:
            incoming[dst] -= 1
            if incoming[dst] == 0:
                queue.append(dst)
    new = {old: i for i, old in enumerate(order)}
    trie = Trie(
        start=0,
        final=[final[old] for old in order],
        arcs=[[(lb, new[dst]) for lb, dst in arcs[old]] for old in order],
    )
    trie.properties = trie_properties(trie)
    return trie


def trie_properties(trie: Trie) -> int:
    """The OpenFST properties OpenFST would compute for this acyclic, sorted trie."""
    names = [
        "expanded",
        "acceptor",
        "i_deterministic",
        "o_deterministic",
        "no_epsilons",
        "no_i_epsilons",
        "no_o_epsilons",
        "i_label_sorted",
        "o_label_sorted",
        "unweighted",
        "acyclic",
        "initial_acyclic",
        "top_sorted",
        "accessible",
        "coaccessible",
        "unweighted_cycles",
    ]
    chain = all(len(a) <= 1 for a in trie.arcs) and not any(
        f and a for f, a in zip(trie.final, trie.arcs, strict=True)
    )
    names.append("string" if chain else "not_string")
    return sum(_PROPS[n] for n in names)


def _pad(offset: int) -> bytes:
    return b"\0" * (-offset % ALIGNMENT)


def const_fst_bytes(trie: Trie, offset: int) -> bytes:
    """The trie as OpenFST writes a ConstFst<StdArc> with align=true at file `offset`."""
    out = bytearray(_FST_PREFIX)
    out += struct.pack("<iiQqqq", FST_ALIGNED_VERSION, IS_ALIGNED, trie.properties, trie.start,
                       len(trie.final), trie.n_arcs)  # fmt: skip
    out += _pad(offset + len(out))
    position = 0
    for is_final, arcs in zip(trie.final, trie.arcs, strict=True):
        out += _STATE.pack(0.0 if is_final else math.inf, position, len(arcs), 0, 0)
        position += len(arcs)
    out += _pad(offset + len(out))
    for arcs in trie.arcs:
        for label, dst in arcs:
            out += _ARC.pack(label, label, 0.0, dst)
    return bytes(out)


def parse_const_fst(data: bytes, offset: int) -> Trie:
    """Read the ConstFst at `offset` of `data` (the whole file: alignment is absolute)."""

    def take(fmt: str):
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values

    def string() -> bytes:
        nonlocal offset
        (n,) = take("<i")
        offset += n
        return data[offset - n : offset]

    (magic,) = take("<i")
    if magic != FST_MAGIC:
        raise ScorerError("the vocabulary trie does not start with OpenFST's magic number")
    fst_type, arc_type = string(), string()
    if (fst_type, arc_type) != (b"const", b"standard"):
        raise ScorerError(f"trie is a {fst_type!r} FST of {arc_type!r} arcs, not const/standard")
    version, flags, properties, start, n_states, n_arcs = take("<iiQqqq")
    aligned = flags & IS_ALIGNED or version == FST_ALIGNED_VERSION
    if flags & 0x3:
        raise ScorerError("trie carries symbol tables, which DeepSpeech never writes")
    if aligned:
        offset += -offset % ALIGNMENT
    states = [take("<fIIII") for _ in range(n_states)]
    if aligned:
        offset += -offset % ALIGNMENT
    raw_arcs = [take("<iifi") for _ in range(n_arcs)]
    return Trie(
        start=start,
        final=[weight != math.inf for weight, *_ in states],
        arcs=[[(a[0], a[3]) for a in raw_arcs[pos : pos + n]] for _, pos, n, _, _ in states],
        properties=properties,
    )


def trie_words(trie: Trie, alphabet: Alphabet | None) -> list[str]:
    """Every word the trie accepts, sorted (labels decoded with `alphabet`, else UTF-8)."""
    words: list[str] = []
    stack: list[tuple[int, tuple[int, ...]]] = [(trie.start, ())]
    while stack:
        state, labels = stack.pop()
        if trie.final[state]:
            word = _decode(labels, alphabet)
            words.append(word[:-1] if alphabet is not None and word.endswith(" ") else word)
        stack.extend((dst, (*labels, label)) for label, dst in trie.arcs[state])
    return sorted(words)


def _decode(labels: tuple[int, ...], alphabet: Alphabet | None) -> str:
    if alphabet is None:
        return bytes(labels).decode("utf-8", errors="replace")
    if any(not 1 <= lb <= len(alphabet) for lb in labels):
        raise ScorerError(
            f"the scorer's vocabulary uses labels beyond the {len(alphabet)}-character "
            "alphabet: it was built for another alphabet (rebuild it with this model's "
            "alphabet.txt)"
        )
    return alphabet.decode(lb - 1 for lb in labels)


def find_package_header(data) -> int | None:
    """Offset of the DeepSpeech header after the KenLM binary, or None (a plain LM).

    The trie is the file's tail, so growing tail windows are searched first: a release
    scorer is ~1 GB of KenLM data before a vocabulary trie of a few MB.
    """
    window = 1 << 20
    while True:
        start = max(0, len(data) - window)
        found = None
        for found in _PACKAGE.finditer(data, start):  # noqa: B007 - the last one counts
            pass
        if found is not None or start == 0:
            return found.start() if found is not None else None
        window *= 16


def _mapped(path: Path):
    with open(path, "rb") as f:
        if Path(path).stat().st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def read_scorer(path: Path) -> ScorerPackage:
    """Header and vocabulary trie of a .scorer package."""
    data = _mapped(Path(path))
    start = find_package_header(data)
    if start is None:
        raise ScorerError(f"{path} is not a DeepSpeech .scorer package (no 'TRIE' header)")
    _, version, utf8, alpha, beta = _HEADER.unpack_from(data, start)
    if version != FILE_VERSION:
        raise ScorerError(
            f"{path} is a version {version} scorer; DeepSpeech 0.9.x (and this reader) use "
            f"version {FILE_VERSION}: regenerate it with generate_scorer_package 0.9.3"
        )
    trie = parse_const_fst(data, start + _HEADER.size)
    return ScorerPackage(Path(path), start, bool(utf8), alpha, beta, trie)


def is_scorer_package(path: Path) -> bool:
    """True when `path` is a KenLM binary followed by DeepSpeech's header and trie."""
    try:
        return find_package_header(_mapped(Path(path))) is not None
    except (OSError, ValueError):
        return False


def package_bytes(
    lm_binary: bytes, words, alphabet: Alphabet | None, alpha: float, beta: float
) -> bytes:
    """A .scorer: the KenLM binary, DeepSpeech's header, the vocabulary trie.

    `alphabet` None is bytes-output mode (labels are UTF-8 bytes).
    """
    trie = build_trie(words, alphabet)
    header = _HEADER.pack(MAGIC, FILE_VERSION, int(alphabet is None), alpha, beta)
    offset = len(lm_binary) + len(header)
    return lm_binary + header + const_fst_bytes(trie, offset)
