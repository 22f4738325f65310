"""Davidson et al. (2017) hate-speech and offensive-language tweets, and the refined n-gram lexicon.

Official layout (github.com/t-davidson/hate-speech-and-offensive-language):
``data/labeled_data.csv`` (unnamed index column, ``count``, ``hate_speech``,
``offensive_language``, ``neither``, ``class``, ``tweet``) and
``lexicons/refined_ngram_dict.csv`` (``ngram``, ``prophate``; old-Mac CR line endings).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "davidson"
TWEETS_FILE = ("data", "labeled_data.csv")
LEXICON_FILE = ("lexicons", "refined_ngram_dict.csv")
CLASSES = ("hate_speech", "offensive_language", "neither")  # class index 0, 1, 2


@dataclass(frozen=True, slots=True)
class Tweet:
    """One labelled tweet. ``label`` is the majority class (0 hate, 1 offensive, 2 neither)."""

    row_id: int
    text: str
    count: int  # number of annotators
    hate_speech: int  # votes for each class
    offensive_language: int
    neither: int
    label: int

    @property
    def soft_label(self) -> tuple[float, float, float]:
        """Share of annotator votes for (hate, offensive, neither)."""
        n = max(self.count, 1)
        return (self.hate_speech / n, self.offensive_language / n, self.neither / n)


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    ngram: str
    prophate: float  # share of tweets containing the n-gram that coders judged hateful


def _int(value: str, path: Path, line: int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"{path}:{line}: field {field!r} is not an integer: {value!r}") from None


def load_tweets(data_dir: Path | str | None = None) -> list[Tweet]:
    """All 24,783 tweets in file order."""
    path = dataset_path(NAME, *TWEETS_FILE, data_dir=data_dir)
    out: list[Tweet] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"count", "hate_speech", "offensive_language", "neither", "class", "tweet"} - set(reader.fieldnames or ())
        if missing:
            raise BadInput(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            line = reader.line_num
            out.append(
                Tweet(
                    row_id=_int(row.get("") or str(len(out)), path, line, "index"),
                    text=row["tweet"],
                    count=_int(row["count"], path, line, "count"),
                    hate_speech=_int(row["hate_speech"], path, line, "hate_speech"),
                    offensive_language=_int(row["offensive_language"], path, line, "offensive_language"),
                    neither=_int(row["neither"], path, line, "neither"),
                    label=_int(row["class"], path, line, "class"),
                )
            )
    return out


def load_lexicon(data_dir: Path | str | None = None) -> list[LexiconEntry]:
    """The 178 refined hate n-grams with their hateful share."""
    path = dataset_path(NAME, *LEXICON_FILE, data_dir=data_dir)
    out: list[LexiconEntry] = []
    # newline="" lets the csv module accept the file's bare CR line endings.
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                out.append(LexiconEntry(ngram=row["ngram"].strip(), prophate=float(row["prophate"])))
            except (KeyError, TypeError, ValueError):
                raise BadInput(f"{path}:{reader.line_num}: expected columns ngram,prophate, got {row}") from None
    return out
