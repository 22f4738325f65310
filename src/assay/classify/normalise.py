"""Text normalisation against evasion, applied before every classifier sees a text.

People who want past a filter write ``һаtе`` with Cyrillic letters, hide zero-width spaces inside
words, write ``h4te`` or ``h a t e``. Each step here undoes one such trick while leaving ordinary
text (in any script) alone:

1. cap the length (``MAX_CHARS``) so a 1 MB string costs no more than a page;
2. Unicode NFKC (fullwidth and mathematical letters become plain ones);
3. drop zero-width and other format characters, control characters and combining marks stacked
   on ASCII letters ("Zalgo");
4. fold homoglyphs to the Latin letter they imitate, using the Unicode confusables table that the
   ``confusable-homoglyphs`` package ships; in a text that is mostly non-Latin only words that mix
   Latin with look-alikes are folded, so Russian or Greek text stays as it is;
5. re-join words spelled out with single letters (``h a t e``, ``h.a.t.e``);
6. undo leetspeak inside words (``h4te``, ``$hit``, ``a$$``), leaving numbers, ordinals and
   mentions alone;
7. optionally (``social=True``) canonicalise tweets: HTML entities, ``@mentions``, URLs, ``RT``.

No library does steps 5-6 (they are small regular-expression passes); NFKC is ``unicodedata``
and the homoglyph table comes from ``confusable-homoglyphs``.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

MAX_CHARS = 10_000  # MiniLM reads at most 128 word pieces; past this nothing can matter

# Characters removed outright: zero-width, joiners, bidi controls, BOM, soft hyphen, tag chars.
_FORMAT_CATEGORIES = {"Cf"}
_KEEP_CONTROLS = {"\n": " ", "\t": " ", "\r": " "}

LEET_MAP = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "€": "e",
}
_LEET_CHARS = re.escape("".join(LEET_MAP))
# A token made of letters and leet characters.
_LEET_TOKEN = re.compile(rf"[A-Za-z{_LEET_CHARS}]+")
# Runs of leet characters with a letter on both sides: h4te, n00b, sh!t.
_LEET_INTERIOR = re.compile(rf"(?<=[A-Za-z])[{_LEET_CHARS}]+(?=[A-Za-z])")
# Non-digit leet symbols at the start ($hit) or end (a$$) of a word.
_LEET_SYMBOL_EDGE = re.compile(r"^[$|€]+(?=[A-Za-z])|(?<=[A-Za-z])[$@|€]+$")
# Single characters separated by spaces or punctuation: "h a t e", "h.a.t.e", "h-a-t-e".
# Spelled-out words, the same separator repeating (so "e.g. U.S.A." is not one run). Punctuation
# runs are joined first and may start inside a word ("previo-u-s"); then space runs, which must be
# whole words ("h a t e"), so that "s a.n.d" cannot glue onto a neighbour.
_SPACED_PUNCT = re.compile(r"[A-Za-z0-9]([.\-_*·]{1,3})(?:[A-Za-z0-9]\1){1,}[A-Za-z0-9](?!\w)")
_SPACED_SPACE = re.compile(r"(?<!\w)[A-Za-z0-9]( {1,3})(?:[A-Za-z0-9]\1){1,}[A-Za-z0-9](?!\w)")
_SPACE_SEPARATORS = re.compile(r"[ .\-_*·]")
_WHITESPACE = re.compile(r"\s+")
_MENTION = re.compile(r"@[A-Za-z0-9_]{1,30}")
_URL = re.compile(r"https?://\S+|www\.\S+")
_RT = re.compile(r"(?:^|\s)RT\s*:?(?=\s|$)")
_WORD = re.compile(r"\w+", re.UNICODE)
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")


@lru_cache(maxsize=1)
def homoglyph_table() -> dict[int, str]:
    """Map of code point -> ASCII letter or digit it imitates (from the Unicode confusables data)."""
    try:
        import confusable_homoglyphs
    except ImportError:  # pragma: no cover - the ml extra installs it
        return {}
    data = json.loads((Path(confusable_homoglyphs.__file__).parent / "confusables.json").read_text(encoding="utf-8"))
    table: dict[int, str] = {}
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        targets = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalnum()]
        letters = [t for t in targets if t.isalpha()]
        if letters or targets:
            table[ord(char)] = (letters or targets)[0]
    return table


def _strip_invisible(text: str) -> str:
    out: list[str] = []
    previous_ascii_letter = False
    for ch in text:
        if ch in _KEEP_CONTROLS:
            out.append(_KEEP_CONTROLS[ch])
            previous_ascii_letter = False
            continue
        category = unicodedata.category(ch)
        if category in _FORMAT_CATEGORIES or category == "Cc" or category == "Cs" or category == "Co":
            continue  # zero-width, bidi, control, lone surrogates, private use
        if category == "Mn" and previous_ascii_letter:
            continue  # combining marks NFKC could not compose onto an ASCII letter: Zalgo text
        out.append(ch)
        previous_ascii_letter = ch.isascii() and ch.isalpha()
    return "".join(out)


def _latin_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(ch.isascii() for ch in letters) / len(letters)


def fold_homoglyphs(text: str) -> str:
    """Replace look-alike letters with the Latin ones they imitate (see module docstring)."""
    table = homoglyph_table()
    if not table or text.isascii():
        return text
    if _latin_share(text) >= 0.5:
        return text.translate(table)

    def fold_mixed(match: re.Match[str]) -> str:
        word = match.group(0)
        if any(ch.isascii() and ch.isalpha() for ch in word) and not word.isascii():
            return word.translate(table)
        return word

    return _WORD.sub(fold_mixed, text)


def join_spaced_letters(text: str) -> str:
    """``h a t e`` -> ``hate`` (three or more single characters separated by space/punctuation)."""
    text = _SPACED_PUNCT.sub(lambda m: _SPACE_SEPARATORS.sub("", m.group(0)), text)
    return _SPACED_SPACE.sub(lambda m: _SPACE_SEPARATORS.sub("", m.group(0)), text)


def undo_leetspeak(text: str) -> str:
    """``h4te`` -> ``hate``, ``$hit`` -> ``shit``, ``a$$`` -> ``ass``; numbers and ``@user`` stay."""

    def fix(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.isalpha() or not any(ch.isalpha() for ch in token):
            return token
        if token.startswith("@"):
            return token  # a mention, not leetspeak
        fixed = _LEET_INTERIOR.sub(lambda m: "".join(LEET_MAP[c] for c in m.group(0)), token)
        fixed = _LEET_SYMBOL_EDGE.sub(lambda m: "".join(LEET_MAP[c] for c in m.group(0)), fixed)
        return fixed

    if "@" not in text:
        return _LEET_TOKEN.sub(fix, text)
    # E-mail addresses keep their "@".
    parts = _EMAIL.split(text)
    emails = _EMAIL.findall(text)
    out = [_LEET_TOKEN.sub(fix, parts[0])]
    for email, part in zip(emails, parts[1:], strict=True):
        out += [email, _LEET_TOKEN.sub(fix, part)]
    return "".join(out)


def clean_social(text: str) -> str:
    """Tweets: unescape HTML entities, ``@name`` -> ``@user``, URLs -> ``http``, drop ``RT``."""
    text = html.unescape(text)
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    return _RT.sub(" ", text)


def normalise(text: str, *, social: bool = False, max_chars: int = MAX_CHARS) -> str:
    """The full evasion-normalisation pipeline; returns ``""`` for a text with nothing visible."""
    if not isinstance(text, str):
        raise TypeError(f"normalise expects str, got {type(text).__name__}")
    text = text[: max_chars * 2]  # bound the work before NFKC can expand anything
    text = unicodedata.normalize("NFKC", text)
    text = _strip_invisible(text)
    text = fold_homoglyphs(text)
    if social:
        text = clean_social(text)
    text = join_spaced_letters(text)
    text = undo_leetspeak(text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text[:max_chars]


def light(text: str, *, social: bool = False, max_chars: int = MAX_CHARS) -> str:
    """What a classifier sees with normalisation switched off: only length cap, whitespace and
    (for tweets) the social clean-up, so "with vs without" measures the evasion steps alone."""
    if not isinstance(text, str):
        raise TypeError(f"normalise expects str, got {type(text).__name__}")
    # Lone surrogates cannot be tokenised; drop them so every str is safe to encode.
    text = text[:max_chars].encode("utf-8", "ignore").decode("utf-8")
    if social:
        text = clean_social(text)
    return _WHITESPACE.sub(" ", text).strip()
