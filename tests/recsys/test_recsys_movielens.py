"""MovieLens loaders: the local ml-latest-small, archives in the official layouts, download + verify."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from assay.data import movielens
from assay.errors import BadInput


@pytest.fixture(scope="module")
def small():
    return movielens.load_latest_small()


def small_folder(data_dir: Path) -> Path:
    return data_dir / "movielens_latest_small" / "ml-latest-small"


def test_latest_small_counts_match_the_readme(small):
    assert len(small.ratings) == 100_836
    assert len(small.movies) == 9_742
    assert len(small.tags) == 3_683
    assert small.ratings["user_id"].nunique() == 610
    toy = small.movies.set_index("item_id").loc[1]
    assert toy["genres"] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert toy["year"] == 1995
    assert "(no genres listed)" not in small.genres
    assert set(small.manifest) and all(len(h) == 64 for h in small.manifest.values())


def test_a_zip_in_the_ml25m_layout_reads_the_same(small, data_dir, tmp_path):
    src = small_folder(data_dir)
    archive = tmp_path / "ml-25m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("ratings.csv", "movies.csv", "tags.csv", "links.csv", "README.txt"):
            zf.write(src / name, f"ml-25m/{name}")
    data = movielens.load_archive(archive)
    assert data.name == "ml-25m"
    pd.testing.assert_frame_equal(data.ratings, small.ratings)
    pd.testing.assert_frame_equal(data.movies, small.movies)
    pd.testing.assert_frame_equal(data.tags, small.tags)
    assert data.manifest[str(archive)] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"{archive}!ml-25m/ratings.csv" in data.manifest


def test_ml1m_and_ml100k_layouts(small, tmp_path):
    ratings = small.ratings.head(500)
    movies = small.movies[small.movies["item_id"].isin(ratings["item_id"])]
    ml1m = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(ml1m, "w") as zf:
        zf.writestr(
            "ml-1m/ratings.dat",
            "".join(f"{u}::{i}::{max(int(r), 1)}::{t}\n" for u, i, r, t in ratings.itertuples(index=False)),
        )
        zf.writestr(
            "ml-1m/movies.dat",
            "".join(
                f"{i}::{title}::{'|'.join(g) or '(no genres listed)'}\n"
                for i, title, g, _y in movies.itertuples(index=False)
            ).encode("latin-1", "replace"),
        )
    one = movielens.load_archive(ml1m)
    assert len(one.ratings) == 500 and one.tags.empty
    assert set(one.movies["item_id"]) == set(movies["item_id"])

    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(
        "".join(f"{u}\t{i}\t{max(int(r), 1)}\t{t}\n" for u, i, r, t in ratings.itertuples(index=False))
    )
    lines = []
    for i, title, genres, _y in movies.itertuples(index=False):
        flags = "|".join("1" if g in genres else "0" for g in movielens.ML100K_GENRES)
        lines.append(f"{i}|{title}|01-Jan-1995||http://x|{flags}\n")
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1", "replace"))
    hundred = movielens.load_directory(folder)
    row = hundred.movies.set_index("item_id").loc[int(movies["item_id"].iloc[0])]
    assert set(row["genres"]) == set(movies["genres"].iloc[0]) - {"IMAX"}


def test_a_damaged_release_file_is_bad_input_naming_the_release(tmp_path):
    """A probe's movies.csv of random bytes under ASSAY_DATA_DIR made ``recsys labels`` a
    UnicodeDecodeError traceback; an empty or ragged file was pandas' own error."""
    for name, movies_csv in (("random", bytes(range(128, 256)) * 20), ("empty", b""),
                             ("ragged", b'movieId,title,genres\n1,"a,b\n')):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,0\n")
        (folder / "movies.csv").write_bytes(movies_csv)
        with pytest.raises(BadInput, match="a MovieLens file is damaged") as e:
            movielens.load_directory(folder)
        assert str(folder) in e.value.message


def _release(folder: Path, ratings: str = "1,1,4.0,0\n", movies: str = "1,A (1995),Drama\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies)
    return folder


@pytest.mark.parametrize(("ratings", "movies", "match"), [
    ("1,1,nan,0\n", "1,A (1995),Drama\n", r"1 ratings are not 0.5 to 5 stars \(first: data row 1, user 1, item 1, rating nan\)"),
    ("1,1,4.0,0\n1,1,7.0,0\n", "1,A (1995),Drama\n", r"not 0.5 to 5 stars \(first: data row 2"),
    ("1,1,4.0,0\n1,1,3.0,5\n", "1,A (1995),Drama\n", r"1 ratings repeat a \(user, item\) pair"),
    ("1,1,4.0,0\n", "1,A (1995),Drama\n1,B (1996),Comedy\n", r"1 movie ids repeat in the movie list \(first: 1\)"),
])
def test_a_rating_off_the_star_scale_or_a_repeated_id_is_refused_not_kept(tmp_path, ratings, movies, match):
    """NaN or 7 stars loaded as they were; a repeated movie id silently kept its first title."""
    with pytest.raises(BadInput, match=match):
        movielens.load_directory(_release(tmp_path / "r", ratings, movies))


@pytest.mark.timeout(20)
def test_a_fifo_or_folder_in_place_of_a_release_file_is_refused_not_waited_on(tmp_path):
    import os

    folder = _release(tmp_path / "r")
    os.mkfifo(folder / "tags.csv")  # optional, but opened when present: used to block forever
    with pytest.raises(BadInput, match=r"tags.csv is a FIFO"):
        movielens.load_directory(folder)
    os.mkfifo(tmp_path / "ml-1m.zip")
    with pytest.raises(BadInput, match=r"ml-1m.zip is a FIFO"):
        movielens.fetch("ml-1m", download=False, cache_dir=tmp_path)


def test_a_damaged_file_is_named_not_only_its_release(tmp_path):
    folder = _release(tmp_path / "r")
    (folder / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n1,1,\xff4.0,0\n")
    with pytest.raises(BadInput, match=r"ratings.csv: a MovieLens file is damaged"):
        movielens.load_directory(folder)


def test_not_a_release_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInput, match="not a MovieLens release"):
        movielens.load_directory(tmp_path)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a readable zip"):
        movielens.load_archive(bad)


def test_verify_names_every_mismatch(tmp_path):
    f = tmp_path / "ml-1m.zip"
    f.write_bytes(b"tampered")
    with pytest.raises(BadInput) as e:
        movielens.verify_archive(f, movielens.ARCHIVES["ml-1m"])
    assert "md5" in e.value.message and "sha256" in e.value.message and "size" in e.value.message


def test_unknown_or_missing_archive_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="unknown MovieLens archive"):
        movielens.fetch("ml-3m", cache_dir=tmp_path)
    with pytest.raises(BadInput, match="not downloaded yet"):
        movielens.fetch("ml-1m", download=False, cache_dir=tmp_path)


@pytest.fixture
def local_server(tmp_path):
    """A real HTTP server on localhost serving ``tmp_path/www``."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_then_keeps_only_good_files(
    local_server, data_dir, tmp_path, monkeypatch
):
    www, base = local_server
    payload = www / "ml-25m.zip"
    with zipfile.ZipFile(payload, "w") as zf:
        for name in ("ratings.csv", "movies.csv", "tags.csv"):
            zf.write(small_folder(data_dir) / name, f"ml-25m/{name}")
    raw = payload.read_bytes()
    good = movielens.Archive(
        "ml-25m",
        f"{base}/ml-25m.zip",
        len(raw),
        hashlib.md5(raw).hexdigest(),
        hashlib.sha256(raw).hexdigest(),
    )
    cache = tmp_path / "cache"
    # the official checksums: our locally built zip is not the official archive -> refused, nothing kept
    with pytest.raises(BadInput, match="does not match the official ml-25m"):
        movielens.fetch("ml-25m", cache_dir=cache, url=f"{base}/ml-25m.zip")
    assert not any(cache.iterdir())
    monkeypatch.setitem(movielens.ARCHIVES, "ml-25m", good)
    path = movielens.fetch("ml-25m", cache_dir=cache)
    assert path.read_bytes() == raw
    data = movielens.load("ml-25m", cache_dir=cache)
    assert len(data.ratings) == 100_836
    folder = movielens.unpack(path, tmp_path / "unpacked")
    assert (folder / "ratings.csv").is_file() and folder.name == "ml-25m"


def test_unpack_refuses_members_outside_the_target(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ml-25m/../../escape.txt", "x")
    with pytest.raises(BadInput, match="outside"):
        movielens.unpack(evil, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
