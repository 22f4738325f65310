"""MovieLens (GroupLens) loaders: ml-latest-small from the data directory, and the official
archives ml-100k, ml-1m and ml-25m downloaded and checksum-verified on a user's machine.

Every loader returns the same :class:`MovieLens` shape, whatever the release's file layout:

- ``ratings``: ``user_id`` (int), ``item_id`` (int), ``rating`` (float stars), ``ts`` (unix s)
- ``movies``: ``item_id``, ``title``, ``year`` (float, NaN when the title has none), ``genres``
  (tuple of genre names; "(no genres listed)" becomes an empty tuple)
- ``tags``: ``user_id``, ``item_id``, ``tag`` (lower-cased, stripped), ``ts`` (empty for releases
  without tags: ml-100k and ml-1m)

Layouts read (as published by GroupLens):

- ``ml-latest-small`` / ``ml-25m`` / ``ml-20m``: ``ratings.csv``, ``movies.csv``, ``tags.csv`` (UTF-8)
- ``ml-1m``: ``ratings.dat``, ``movies.dat`` with ``::`` separators (Latin-1)
- ``ml-100k``: ``u.data`` (tab separated), ``u.item`` (``|`` separated, 19 genre flags, Latin-1)

Licence: research and non-commercial use; cite Harper & Konstan (2015), ACM TiiS 5(4):19.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from assay.config import settings
from assay.errors import BadInput, Unavailable
from assay.files import check_regular

FOLDER = "movielens_latest_small"  # under the data directory
SMALL_SUBDIR = "ml-latest-small"


@dataclass(frozen=True)
class Archive:
    """An official GroupLens archive with the checksums it must match."""

    name: str
    url: str
    size: int
    md5: str  # published by GroupLens next to the archive (<url>.md5)
    sha256: str  # as recorded by tensorflow/datasets url_checksums/movielens.txt


# Official URLs. md5: GroupLens' own .md5 files; sha256 and size: tensorflow/datasets'
# url_checksums/movielens.txt (commit 1c076ac3). Both are checked after download.
ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(
        "ml-100k",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        4924029,
        "0e33842e24a9c977be4e0107933c0723",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "ml-1m": Archive(
        "ml-1m",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        5917549,
        "c4d9eecfca2ab87c1945afe126590906",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "ml-25m": Archive(
        "ml-25m",
        "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
        261978986,
        "6b51fb2759a8657d3bfcbfc42b592ada",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    ),
}

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

MIN_STARS, MAX_STARS = 0.5, 5.0  # every release: half stars (ml-latest, ml-25m) or whole (ml-100k, ml-1m)

_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class MovieLens:
    """One MovieLens release in a common shape, with the sha256 of every file it came from."""

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame
    manifest: dict[str, str] = field(default_factory=dict)  # source file -> sha256

    @property
    def genres(self) -> list[str]:
        """Every genre named in the catalogue, sorted."""
        return sorted({g for gs in self.movies["genres"] for g in gs})

    def slice_users(self, n_users: int) -> MovieLens:
        """The first ``n_users`` users (by id) with all their ratings and tags: small test data."""
        keep = np.sort(self.ratings["user_id"].unique())[:n_users]
        ratings = self.ratings[self.ratings["user_id"].isin(keep)].reset_index(drop=True)
        tags = self.tags[self.tags["user_id"].isin(keep)].reset_index(drop=True)
        return MovieLens(
            f"{self.name}[users<{n_users}]", ratings, self.movies, tags, dict(self.manifest)
        )


# ---------------------------------------------------------------------------------------------
# readers that work on any opener (a folder or a zip archive)

Opener = Callable[[str], IO[bytes]]


def _parse_genres(value: object) -> tuple[str, ...]:
    if not isinstance(value, str) or value in ("", "(no genres listed)"):
        return ()
    return tuple(g for g in value.split("|") if g)


def _year(title: str) -> float:
    m = _YEAR.search(title.strip()) if isinstance(title, str) else None
    return float(m.group(1)) if m else np.nan


def _csv_layout(open_file: Opener) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with open_file("ratings.csv") as fh:
        ratings = pd.read_csv(
            fh,
            dtype={
                "userId": np.int64,
                "movieId": np.int64,
                "rating": np.float32,
                "timestamp": np.int64,
            },
        )
    with open_file("movies.csv") as fh:
        movies = pd.read_csv(
            fh, dtype={"movieId": np.int64, "title": str, "genres": str}, keep_default_na=False
        )
    try:
        with open_file("tags.csv") as fh:
            tags = pd.read_csv(
                fh,
                dtype={"userId": np.int64, "movieId": np.int64, "tag": str, "timestamp": np.int64},
                keep_default_na=False,
            )
    except FileNotFoundError:
        tags = pd.DataFrame({"userId": [], "movieId": [], "tag": [], "timestamp": []})
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
    movies = movies.rename(columns={"movieId": "item_id"})
    tags = tags.rename(columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
    movies["genres"] = movies["genres"].map(_parse_genres)
    return ratings, movies, tags


def _ml1m_layout(open_file: Opener) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with open_file("ratings.dat") as fh:
        ratings = pd.read_csv(
            fh, sep="::", engine="python", header=None, names=["user_id", "item_id", "rating", "ts"]
        )
    with open_file("movies.dat") as fh:
        movies = pd.read_csv(
            fh,
            sep="::",
            engine="python",
            header=None,
            names=["item_id", "title", "genres"],
            encoding="latin-1",
        )
    movies["genres"] = movies["genres"].map(_parse_genres)
    movies["genres"] = movies["genres"].map(
        lambda gs: tuple("Children" if g == "Children's" else g for g in gs)
    )
    return ratings, movies, pd.DataFrame({"user_id": [], "item_id": [], "tag": [], "ts": []})


def _ml100k_layout(open_file: Opener) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with open_file("u.data") as fh:
        ratings = pd.read_csv(
            fh, sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"]
        )
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES]
    with open_file("u.item") as fh:
        raw = pd.read_csv(fh, sep="|", header=None, names=names, encoding="latin-1")
    flags = raw[list(ML100K_GENRES)].to_numpy(dtype=bool)
    genres = [
        tuple(g for g, on in zip(ML100K_GENRES, row, strict=True) if on and g != "unknown")
        for row in flags
    ]
    movies = pd.DataFrame(
        {"item_id": raw["item_id"], "title": raw["title"].fillna(""), "genres": genres}
    )
    return ratings, movies, pd.DataFrame({"user_id": [], "item_id": [], "tag": [], "ts": []})


def _detect_layout(
    names: set[str],
) -> Callable[[Opener], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    if {"ratings.csv", "movies.csv"} <= names:
        return _csv_layout
    if {"ratings.dat", "movies.dat"} <= names:
        return _ml1m_layout
    if {"u.data", "u.item"} <= names:
        return _ml100k_layout
    raise FileNotFoundError


def _normalise(
    name: str,
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    tags: pd.DataFrame,
    manifest: dict[str, str],
) -> MovieLens:
    try:
        ratings = ratings.astype(
            {"user_id": np.int64, "item_id": np.int64, "rating": np.float32, "ts": np.int64}
        )
        movies = movies[["item_id", "title", "genres"]].copy()
        movies["item_id"] = movies["item_id"].astype(np.int64)
    except (TypeError, ValueError) as e:  # an empty or non-numeric id, rating or timestamp
        raise BadInput(f"{name}: a rating or movie row has a missing or non-numeric field ({str(e).splitlines()[0][:200]})") from None
    ratings = ratings[["user_id", "item_id", "rating", "ts"]].reset_index(drop=True)
    stars = ratings["rating"].to_numpy()
    bad = ~((stars >= MIN_STARS) & (stars <= MAX_STARS))  # NaN too
    if bad.any():
        row = ratings[bad].iloc[0]
        raise BadInput(
            f"{name}: {int(bad.sum())} ratings are not {MIN_STARS:g} to {MAX_STARS:g} stars (first: data row "
            f"{int(np.flatnonzero(bad)[0]) + 1}, user {int(row['user_id'])}, item {int(row['item_id'])}, rating {row['rating']})"
        )
    twice = ratings.duplicated(["user_id", "item_id"])
    if twice.any():
        row = ratings[twice].iloc[0]
        raise BadInput(f"{name}: {int(twice.sum())} ratings repeat a (user, item) pair (first: user {int(row['user_id'])}, "
                       f"item {int(row['item_id'])}, data row {int(np.flatnonzero(twice)[0]) + 1})")
    repeated = movies["item_id"].duplicated()
    if repeated.any():  # was: silently kept the first title and genres
        raise BadInput(f"{name}: {int(repeated.sum())} movie ids repeat in the movie list (first: "
                       f"{int(movies.loc[repeated, 'item_id'].iloc[0])})")
    movies["year"] = movies["title"].map(_year).astype(float)
    movies = movies.reset_index(drop=True)
    tags = tags[["user_id", "item_id", "tag", "ts"]].copy()
    tags["tag"] = tags["tag"].astype(str).str.strip().str.lower()
    tags = (
        tags[tags["tag"] != ""]
        .astype({"user_id": np.int64, "item_id": np.int64, "ts": np.int64})
        .reset_index(drop=True)
    )
    unknown = ~ratings["item_id"].isin(movies["item_id"])
    if unknown.any():
        raise BadInput(
            f"{name}: {int(unknown.sum())} ratings name movies missing from the movie list (first: {int(ratings.loc[unknown, 'item_id'].iloc[0])})"
        )
    if ratings.empty:
        raise BadInput(f"{name}: the ratings file has no rows")
    return MovieLens(name, ratings, movies, tags, manifest)


def _read_layout(reader: Callable, opener: Callable, where: Path, sep: str = "/") -> tuple:
    """``reader(opener)``, where a file the layout names but cannot parse (not UTF-8, not CSV,
    empty, ragged: pandas' ``ParserError``/``EmptyDataError`` are ``ValueError``s) is bad input
    naming the file (``where`` + ``sep`` + its name), not a traceback."""
    opened: list[str] = []

    def tracked(name: str) -> IO[bytes]:
        opened.append(name)
        return opener(name)

    try:
        return reader(tracked)
    except (UnicodeDecodeError, ValueError) as e:
        place = f"{where}{sep}{opened[-1]}" if opened else str(where)
        raise BadInput(f"{place}: a MovieLens file is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                       hint="compare it with its checksums, or download the release again (assay recsys download)") from None


def load_directory(folder: Path | str, name: str | None = None) -> MovieLens:
    """Read an unpacked MovieLens release folder (any of the three layouts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(f"MovieLens folder not found: {folder}")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    try:
        reader = _detect_layout(names)
    except FileNotFoundError:
        raise BadInput(
            f"{folder} is not a MovieLens release: expected ratings.csv+movies.csv, ratings.dat+movies.dat or u.data+u.item",
        ) from None
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name in _DATA_FILES)
    manifest = {str(p): _sha256(p.read_bytes()) for p in files}
    ratings, movies, tags = _read_layout(reader, lambda n: _open_regular(folder / n), folder)
    return _normalise(name or folder.name, ratings, movies, tags, manifest)


def _open_regular(path: Path) -> IO[bytes]:
    """Open a release file for the layout readers: FileNotFoundError when absent (tags are
    optional), BadInput when it is not a regular file (a FIFO there would block forever)."""
    if not os.path.lexists(path):
        raise FileNotFoundError(path)
    return open(check_regular(path, "MovieLens file"), "rb")


_DATA_FILES = {
    "ratings.csv",
    "movies.csv",
    "tags.csv",
    "links.csv",
    "ratings.dat",
    "movies.dat",
    "users.dat",
    "u.data",
    "u.item",
    "u.user",
}


def load_archive(zip_path: Path | str, name: str | None = None) -> MovieLens:
    """Read a MovieLens zip as GroupLens publishes it (one top folder, e.g. ``ml-25m/``) without
    unpacking it. The manifest records the archive's sha256 and each member's."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise BadInput(f"MovieLens archive not found: {zip_path}")
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise BadInput(f"{zip_path} is not a readable zip archive: {e}") from e
    with zf:
        members = {Path(i.filename).name: i.filename for i in zf.infolist() if not i.is_dir()}
        try:
            reader = _detect_layout(set(members))
        except FileNotFoundError:
            raise BadInput(
                f"{zip_path} does not hold a MovieLens release (members: {', '.join(sorted(members)[:8])})"
            ) from None
        manifest = {str(zip_path): _file_digests(zip_path)[1]}
        for short, full in sorted(members.items()):
            if short in _DATA_FILES:
                manifest[f"{zip_path}!{full}"] = _sha256(zf.read(full))

        def open_member(short: str) -> IO[bytes]:
            if short not in members:
                raise FileNotFoundError(short)
            return io.BytesIO(zf.read(members[short]))

        ratings, movies, tags = _read_layout(reader, open_member, zip_path, sep="!")
    top = next(iter(members.values())).split("/")[0]
    return _normalise(name or top, ratings, movies, tags, manifest)


def load_latest_small(data_dir: Path | str | None = None) -> MovieLens:
    """ml-latest-small from the data directory (``<data_dir>/movielens_latest_small/ml-latest-small``)."""
    try:
        from assay.data import dataset_path

        folder = dataset_path("movielens", SMALL_SUBDIR, data_dir=data_dir)
    except ImportError:  # pragma: no cover - older trees without assay.data helpers
        folder = Path(data_dir or settings().data_dir) / FOLDER / SMALL_SUBDIR
    return load_directory(folder, name="ml-latest-small")


def load(
    name: str = "ml-latest-small", *, download: bool = False, cache_dir: Path | None = None
) -> MovieLens:
    """Load a release by name: ``ml-latest-small`` from the data directory, or an official
    archive (``ml-100k``, ``ml-1m``, ``ml-25m``) from the cache, downloading it when allowed."""
    if name == "ml-latest-small":
        return load_latest_small()
    archive = fetch(name, download=download, cache_dir=cache_dir)
    return load_archive(archive, name=name)


# ---------------------------------------------------------------------------------------------
# download + verify


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digests(path: Path) -> tuple[str, str, int]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    with open(check_regular(path, "MovieLens archive"), "rb") as fh:
        while chunk := fh.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), size


def verify_archive(path: Path, archive: Archive) -> None:
    """Check size, md5 and sha256 of a downloaded archive; raise ``BadInput`` naming the mismatch."""
    md5, sha, size = _file_digests(path)
    problems = []
    if size != archive.size:
        problems.append(f"size {size} != {archive.size}")
    if md5 != archive.md5:
        problems.append(f"md5 {md5} != {archive.md5}")
    if sha != archive.sha256:
        problems.append(f"sha256 {sha} != {archive.sha256}")
    if problems:
        raise BadInput(
            f"{path} does not match the official {archive.name} archive: " + "; ".join(problems),
            hint=f"delete it and download again from {archive.url}",
        )


def fetch(
    name: str, *, download: bool = True, cache_dir: Path | None = None, url: str | None = None
) -> Path:
    """The verified archive for ``name`` under ``ASSAY_HOME/datasets/movielens`` (or ``cache_dir``).

    Downloads from the official GroupLens URL (or ``url``, e.g. a mirror) into a temporary file,
    verifies size, md5 and sha256, then moves it into place; a failed check leaves nothing behind.
    """
    if name not in ARCHIVES:
        raise BadInput(
            f"unknown MovieLens archive {name!r}; known: {', '.join(sorted(ARCHIVES))} (and ml-latest-small from the data directory)"
        )
    archive = ARCHIVES[name]
    folder = Path(cache_dir) if cache_dir else settings().path("datasets", "movielens", "x").parent
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.zip"
    if target.exists():
        verify_archive(target, archive)
        return target
    if not download:
        raise BadInput(
            f"{name} is not downloaded yet (looked for {target})",
            hint=f"run `assay recsys download {name}`",
        )
    import httpx

    partial = target.with_suffix(".zip.part")
    try:
        with httpx.stream(
            "GET", url or archive.url, follow_redirects=True, timeout=60.0
        ) as response:
            response.raise_for_status()
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
    except httpx.HTTPError as e:
        partial.unlink(missing_ok=True)
        raise Unavailable(f"could not download {name} from {url or archive.url}: {e}") from e
    try:
        verify_archive(partial, archive)
    except BadInput:
        partial.unlink(missing_ok=True)
        raise
    shutil.move(partial, target)
    return target


def unpack(archive_path: Path | str, dest: Path | str) -> Path:
    """Unzip a verified archive into ``dest`` (refusing members that would escape it); returns
    the release folder (e.g. ``dest/ml-25m``)."""
    archive_path, dest = Path(archive_path), Path(dest).resolve()
    with zipfile.ZipFile(archive_path) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest):
                raise BadInput(
                    f"{archive_path}: member {info.filename!r} would be written outside {dest}"
                )
        zf.extractall(dest)
        top = zf.infolist()[0].filename.split("/")[0]
    return dest / top
