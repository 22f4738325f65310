"""Obfuscations people use to slip text past a filter, as deterministic functions.

The classifier part uses them to measure what normalisation buys (detection rate on obfuscated
test sets, with and without ``normalise``); the red-team part reuses them as filter-evasion
attacks. Every function is ``f(text, rng) -> str`` with a ``random.Random`` so a seed gives the
same variant everywhere; ``obfuscate(text, kind, seed)`` picks one by name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

# Latin letter -> a look-alike from Cyrillic / Greek (all listed in Unicode's confusables.txt).
HOMOGLYPHS = {
    "a": "а", "c": "с", "d": "ԁ", "e": "е", "h": "һ", "i": "і", "j": "ј", "o": "о", "p": "р",
    "s": "ѕ", "x": "х", "y": "у", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І",
    "K": "К", "M": "М", "N": "Ν", "O": "О", "P": "Р", "S": "Ѕ", "T": "Т", "X": "Х", "Y": "Υ", "Z": "Ζ",
}  # fmt: skip
ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "A": "4", "E": "3", "I": "1", "O": "0", "S": "$", "T": "7"}
SPACERS = (" ", ".", "-", "*")
_WORD = re.compile(r"[A-Za-z]{3,}")


def _pick_words(text: str, rng: random.Random, rate: float) -> list[re.Match[str]]:
    words = list(_WORD.finditer(text))
    if not words:
        return []
    chosen = [w for w in words if rng.random() < rate]
    return chosen or [max(words, key=lambda w: len(w.group(0)))]  # always touch at least the longest word


def _rewrite(text: str, rng: random.Random, rate: float, change: Callable[[str, random.Random], str]) -> str:
    out, last = [], 0
    for match in _pick_words(text, rng, rate):
        out.append(text[last : match.start()])
        out.append(change(match.group(0), rng))
        last = match.end()
    out.append(text[last:])
    return "".join(out)


def homoglyph(text: str, rng: random.Random, rate: float = 0.6) -> str:
    """Swap Latin letters for Cyrillic/Greek look-alikes: ``hate`` -> ``һаtе``."""
    return _rewrite(text, rng, rate, lambda w, r: "".join(HOMOGLYPHS.get(c, c) if r.random() < 0.7 else c for c in w))


def zero_width(text: str, rng: random.Random, rate: float = 0.6) -> str:
    """Hide zero-width characters between the letters of words."""
    return _rewrite(text, rng, rate, lambda w, r: "".join(c + (r.choice(ZERO_WIDTH) if i < len(w) - 1 else "") for i, c in enumerate(w)))


def leetspeak(text: str, rng: random.Random, rate: float = 0.6) -> str:
    """``hate`` -> ``h473``-style digit and symbol substitutions inside words."""

    def change(word: str, r: random.Random) -> str:
        chars = list(word)
        for i, c in enumerate(chars):
            if 0 < i < len(chars) - 1 and c in LEET and r.random() < 0.8:
                chars[i] = LEET[c]
        return "".join(chars)

    return _rewrite(text, rng, rate, change)


def spacing(text: str, rng: random.Random, rate: float = 0.4) -> str:
    """Spell words out with separators: ``hate`` -> ``h a t e`` or ``h.a.t.e``."""
    return _rewrite(text, rng, rate, lambda w, r: r.choice(SPACERS).join(w))


def fullwidth(text: str, rng: random.Random, rate: float = 0.6) -> str:
    """Fullwidth forms: ``hate`` -> ``ｈａｔｅ`` (undone by NFKC)."""
    return _rewrite(text, rng, rate, lambda w, r: "".join(chr(ord(c) + 0xFEE0) for c in w))


def mixed(text: str, rng: random.Random) -> str:
    """Two different tricks on top of each other (homoglyphs or leetspeak, then zero-width or spacing)."""
    first = rng.choice([homoglyph, leetspeak])
    second = rng.choice([zero_width, spacing])
    return second(first(text, rng), rng)


KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "homoglyph": homoglyph,
    "zero_width": zero_width,
    "leetspeak": leetspeak,
    "spacing": spacing,
    "fullwidth": fullwidth,
    "mixed": mixed,
}


def obfuscate(text: str, kind: str, seed: int = 0) -> str:
    """The ``kind`` variant of ``text``; the same (text, kind, seed) always gives the same string."""
    if kind not in KINDS:
        raise ValueError(f"unknown obfuscation {kind!r}; known: {', '.join(KINDS)}")
    rng = random.Random(f"{seed}:{kind}:{text}")
    return KINDS[kind](text, rng)
