"""Davidson et al. (2017) hate-speech and offensive-language tweets, and the refined n-gram lexicon.

Official layout (github.com/t-davidson/hate-speech-and-offensive-language):
``data/labeled_data.csv`` (unnamed index column, ``count``, ``hate_speech``,
``offensive_language``, ``neither``, ``class``, ``tweet``) and
``lexicons/refined_ngram_dict.csv`` (``ngram``, ``prophate``; old-Mac CR line endings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
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


def load_tweets(data_dir: Path | str | None = None) -> list[Tweet]:
    """All 24,783 tweets in file order. Each row's votes must add up to its annotator count and
    its class be 0, 1 or 2: a label is never taken on trust from a damaged row."""
    path = dataset_path(NAME, *TWEETS_FILE, data_dir=data_dir)
    out: list[Tweet] = []
    rows = read.csv_rows(path, "Davidson tweets", ("count", *CLASSES, "class", "tweet"))
    for where, row in rows:
        votes = [read.whole(row[c], where, c, lo=0) for c in CLASSES]
        count = read.whole(row["count"], where, "count", lo=1)
        if sum(votes) != count:
            raise BadInput(f"{where}: the votes ({' + '.join(map(str, votes))}) do not add up to count {count}")
        out.append(
            Tweet(
                row_id=read.whole(row[""], where, "the index column", lo=0) if "" in row else len(out),
                text=read.string(row["tweet"], where, "tweet"),
                count=count,
                hate_speech=votes[0],
                offensive_language=votes[1],
                neither=votes[2],
                label=read.whole(row["class"], where, "class", lo=0, hi=len(CLASSES) - 1),
            )
        )
    read.unique(((where, t.row_id) for (where, _), t in zip(rows, out, strict=True)), "row id")
    return out


def load_lexicon(data_dir: Path | str | None = None) -> list[LexiconEntry]:
    """The 178 refined hate n-grams with their hateful share."""
    path = dataset_path(NAME, *LEXICON_FILE, data_dir=data_dir)
    # the csv reader accepts the file's bare CR line endings
    rows = read.csv_rows(path, "Davidson lexicon", ("ngram", "prophate"))
    out = [LexiconEntry(ngram=read.string(row["ngram"], where, "ngram").strip(), prophate=read.fraction(row["prophate"], where, "prophate"))
           for where, row in rows]
    # the lexicon scorer keys on the lower-cased n-gram: a repeat would silently keep one share
    read.unique(((where, e.ngram.lower()) for (where, _), e in zip(rows, out, strict=True)), "ngram")
    return out
