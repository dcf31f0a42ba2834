"""Tests for the dataset registry, fetch, the MovieLens loaders and the generic file loaders."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import logging
import os
import zipfile
from pathlib import Path

import polars as pl
import pytest

from hybridrec.data import datasets
from hybridrec.data.datasets import DATASETS, data_home, dataset_status, fetch, list_datasets
from hybridrec.data.loaders import (
    LOADERS,
    load_dataset,
    load_files,
    load_interactions,
    load_items,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest_small,
    load_users,
    read_table,
)
from hybridrec.errors import ConfigError, DataError

INTERACTION_SCHEMA = {
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "weight": pl.Float64,
    "timestamp": pl.Int64,
    "event_type": pl.String,
}
USER_SCHEMA = {
    "user_id": pl.Int64,
    "age": pl.Int64,
    "gender": pl.String,
    "occupation": pl.String,
    "zip_code": pl.String,
}


def flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


# --- MovieLens latest-small -------------------------------------------------------------------


def write_latest_small(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,11,3.5,964981247\n"
        "2,40697,5.0,1445714994\n"
        "3,143410,0.5,1306463718\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "40697,Babylon 5,Sci-Fi\n"
        "143410,Hyena Road ,(no genres listed)\n",
        encoding="utf-8",
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "2,1,pixar,1445714994\n"
        "3,1,Pixar,1445714996\n"
        "3,1,fun,1445714992\n"
        '4,11,"politics, US",1445715000\n'
    )
    (folder / "links.csv").write_text(
        "movieId,imdbId,tmdbId\n1,0114709,862\n11,0112346,9087\n40697,0105946,\n143410,4034452,316042\n"
    )
    return folder


def test_latest_small_loads_canonical_tables(tmp_path: Path) -> None:
    data = load_movielens_latest_small(write_latest_small(tmp_path / "ml-latest-small"))

    assert data.name == "movielens-latest-small"
    assert data.users is None
    inter = data.interactions
    assert dict(inter.schema) == INTERACTION_SCHEMA
    assert inter.height == 4
    assert inter.row(1) == (1, 11, 3.5, 964981247, "rating")
    assert set(inter["event_type"]) == {"rating"}

    items = data.items
    assert items is not None
    assert dict(items.schema) == {
        "item_id": pl.Int64,
        "title": pl.String,
        "year": pl.Int64,
        "categories": pl.List(pl.String),
        "tags": pl.String,
        "imdb_id": pl.Int64,
        "tmdb_id": pl.Int64,
    }
    by_id = {row["item_id"]: row for row in items.iter_rows(named=True)}
    assert by_id[1] == {
        "item_id": 1,
        "title": "Toy Story",
        "year": 1995,
        "categories": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"],
        "tags": "fun pixar",
        "imdb_id": 114709,
        "tmdb_id": 862,
    }
    assert by_id[11]["title"] == "American President, The"
    assert by_id[11]["tags"] == "politics, us"
    assert by_id[40697]["title"] == "Babylon 5"
    assert by_id[40697]["year"] is None
    assert by_id[40697]["tmdb_id"] is None
    assert by_id[40697]["tags"] == ""
    assert by_id[143410]["title"] == "Hyena Road"
    assert by_id[143410]["categories"] == []


def test_latest_small_without_tags_and_links(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path / "ml")
    (folder / "tags.csv").unlink()
    (folder / "links.csv").unlink()
    items = load_movielens_latest_small(folder).items
    assert items is not None
    assert items["tags"].to_list() == ["", "", "", ""]
    assert items["imdb_id"].dtype == pl.Int64
    assert items["imdb_id"].null_count() == 4


def test_latest_small_missing_ratings_names_file(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path / "ml")
    (folder / "ratings.csv").unlink()
    with pytest.raises(DataError, match=r"ratings\.csv: file not found"):
        load_movielens_latest_small(folder)


# --- MovieLens 100K ---------------------------------------------------------------------------

GENRES_100K = (
    "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
    "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\n"
    "Romance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n"
)


def write_100k(folder: Path, *, genre_file: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
    )
    items = [
        f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags(5)}",
        f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/x|{flags(6, 10, 13, 16)}",
        f"377|Misérables, Les (1995)|01-Jan-1995|||{flags(8, 17)}",
        f"267|unknown||||{flags(0)}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text(
        "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|T8H1N\n"
    )
    if genre_file:
        (folder / "u.genre").write_text(GENRES_100K)
    return folder


@pytest.mark.parametrize("genre_file", [True, False])
def test_100k_loads_canonical_tables(tmp_path: Path, genre_file: bool) -> None:
    data = load_movielens_100k(write_100k(tmp_path / "ml-100k", genre_file=genre_file))

    assert data.name == "movielens-100k"
    assert dict(data.interactions.schema) == INTERACTION_SCHEMA
    assert data.interactions.row(0) == (196, 242, 3.0, 881250949, "rating")
    assert data.interactions.height == 3

    items = data.items
    assert items is not None
    assert dict(items.schema) == {
        "item_id": pl.Int64,
        "title": pl.String,
        "year": pl.Int64,
        "categories": pl.List(pl.String),
        "release_date": pl.Date,
        "imdb_url": pl.String,
    }
    by_id = {row["item_id"]: row for row in items.iter_rows(named=True)}
    assert by_id[242]["title"] == "Kolya"
    assert by_id[242]["year"] == 1996
    assert by_id[242]["categories"] == ["Comedy"]
    assert by_id[242]["release_date"] == dt.date(1997, 1, 24)
    assert by_id[302]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert by_id[377]["title"] == "Misérables, Les"
    assert by_id[377]["categories"] == ["Drama", "War"]
    assert by_id[377]["imdb_url"] is None
    assert by_id[267] == {
        "item_id": 267,
        "title": "unknown",
        "year": None,
        "categories": ["unknown"],
        "release_date": None,
        "imdb_url": None,
    }

    users = data.users
    assert users is not None
    assert dict(users.schema) == USER_SCHEMA
    assert users.row(0) == (196, 49, "M", "writer", "55105")
    assert users["zip_code"].to_list() == ["55105", "00000", "T8H1N"]


def test_100k_year_falls_back_to_release_date(tmp_path: Path) -> None:
    folder = write_100k(tmp_path / "ml-100k")
    (folder / "u.item").write_text(f"1|No Year Here|01-Jan-1995|||{flags(5)}\n")
    items = load_movielens_100k(folder).items
    assert items is not None
    assert items.row(0, named=True)["year"] == 1995


def test_100k_bad_line_names_file_and_line(tmp_path: Path) -> None:
    folder = write_100k(tmp_path / "ml-100k")
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\tthree\t891717742\n")
    with pytest.raises(DataError, match=r"u\.data: line 2: column 'weight'.*'three'"):
        load_movielens_100k(folder)
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\n")
    with pytest.raises(DataError, match=r"u\.data: line 2: expected 4 fields"):
        load_movielens_100k(folder)


# --- MovieLens 1M -----------------------------------------------------------------------------


def write_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1664::4::978298413\n"
    )
    movies = (
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "1664::Nénette et Boni (1996)::Drama\n"
        "3::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    )
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def test_1m_loads_canonical_tables(tmp_path: Path) -> None:
    data = load_movielens_1m(write_1m(tmp_path / "ml-1m"))

    assert data.name == "movielens-1m"
    assert dict(data.interactions.schema) == INTERACTION_SCHEMA
    assert data.interactions.row(2) == (2, 1664, 4.0, 978298413, "rating")

    items = data.items
    assert items is not None
    assert dict(items.schema) == {
        "item_id": pl.Int64,
        "title": pl.String,
        "year": pl.Int64,
        "categories": pl.List(pl.String),
    }
    by_id = {row["item_id"]: row for row in items.iter_rows(named=True)}
    assert by_id[1664] == {
        "item_id": 1664,
        "title": "Nénette et Boni",
        "year": 1996,
        "categories": ["Drama"],
    }
    assert by_id[661]["categories"] == ["Animation", "Children's", "Musical"]
    assert by_id[3]["title"] == "Star Wars: Episode IV - A New Hope"

    users = data.users
    assert users is not None
    assert dict(users.schema) == USER_SCHEMA
    assert users.rows() == [
        (1, 1, "F", "K-12 student", "48067"),
        (2, 56, "M", "self-employed", "70072"),
    ]


def test_1m_accepts_utf8_copy(tmp_path: Path) -> None:
    folder = write_1m(tmp_path / "ml-1m")
    (folder / "movies.dat").write_text("1664::Nénette et Boni (1996)::Drama\n", encoding="utf-8")
    items = load_movielens_1m(folder).items
    assert items is not None
    assert items["title"].to_list() == ["Nénette et Boni"]


# --- registry and fetch -----------------------------------------------------------------------


def test_registry() -> None:
    assert set(DATASETS) == {"movielens-latest-small", "movielens-100k", "movielens-1m"}
    assert set(LOADERS) == set(DATASETS)
    assert [d.name for d in list_datasets()] == sorted(DATASETS)
    for info in DATASETS.values():
        assert info.url == f"https://files.grouplens.org/datasets/movielens/{info.directory}.zip"
        assert info.sha256 is None or len(info.sha256) == 64
        assert info.files


def test_data_home_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HYBRIDREC_DATA_HOME", raising=False)
    assert data_home() == Path.home() / ".hybridrec" / "data"
    monkeypatch.setenv("HYBRIDREC_DATA_HOME", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(tmp_path / "explicit") == tmp_path / "explicit"


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"movielens-100k.*movielens-1m.*movielens-latest-small"):
        fetch("movielens-10m", data_home="/nonexistent")


def test_fetch_present_returns_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_100k(tmp_path / "ml-100k")
    # Any network use would fail loudly.
    monkeypatch.setattr(datasets.urllib.request, "urlopen", None)
    assert fetch("movielens-100k", data_home=tmp_path) == tmp_path / "ml-100k"
    status = dataset_status("movielens-100k", data_home=tmp_path)
    assert status["present"] is True
    assert status["path"] == str(tmp_path / "ml-100k")
    data = load_dataset("movielens-100k", data_home=tmp_path)
    assert data.interactions.height == 3


def test_fetch_missing_without_download(tmp_path: Path) -> None:
    folder = write_1m(tmp_path / "ml-1m")
    (folder / "users.dat").unlink()
    with pytest.raises(DataError) as err:
        fetch("movielens-1m", data_home=tmp_path, download=False)
    msg = str(err.value)
    assert "users.dat" in msg
    assert "ratings.dat" not in msg
    assert str(folder) in msg
    assert "HYBRIDREC_DATA_HOME" in msg
    assert dataset_status("movielens-1m", data_home=tmp_path)["present"] is False


def make_zip(tmp_path: Path) -> tuple[Path, str]:
    src = write_100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"ml-100k/{f.name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def patch_100k(monkeypatch: pytest.MonkeyPatch, url: str, sha256: str | None) -> None:
    info = dataclasses.replace(DATASETS["movielens-100k"], url=url, sha256=sha256)
    monkeypatch.setitem(DATASETS, "movielens-100k", info)


def test_fetch_downloads_and_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, sha = make_zip(tmp_path)
    patch_100k(monkeypatch, archive.as_uri(), sha)
    home = tmp_path / "home"
    folder = fetch("movielens-100k", data_home=home)
    assert folder == home / "ml-100k"
    assert {"u.data", "u.item", "u.user"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in home.iterdir()] == ["ml-100k"]  # no temp dir left behind
    assert load_dataset("movielens-100k", data_home=home, download=False).users is not None


def test_fetch_replaces_incomplete_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, sha = make_zip(tmp_path)
    patch_100k(monkeypatch, archive.as_uri(), sha)
    home = tmp_path / "home"
    (home / "ml-100k").mkdir(parents=True)
    (home / "ml-100k" / "u.data").write_text("partial")
    folder = fetch("movielens-100k", data_home=home)
    assert (folder / "u.item").is_file()
    assert [p.name for p in home.iterdir()] == ["ml-100k"]


def test_fetch_wrong_hash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, sha = make_zip(tmp_path)
    patch_100k(monkeypatch, archive.as_uri(), "0" * 64)
    home = tmp_path / "home"
    with pytest.raises(DataError) as err:
        fetch("movielens-100k", data_home=home)
    assert "0" * 64 in str(err.value)
    assert sha in str(err.value)
    assert list(home.iterdir()) == []


def test_fetch_without_hash_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    archive, _ = make_zip(tmp_path)
    patch_100k(monkeypatch, archive.as_uri(), None)
    with caplog.at_level(logging.WARNING, logger="hybridrec.data.datasets"):
        folder = fetch("movielens-100k", data_home=tmp_path / "home")
    assert (folder / "u.data").is_file()
    assert "cannot be verified" in caplog.text


def test_fetch_network_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = (tmp_path / "absent.zip").as_uri()
    patch_100k(monkeypatch, url, "0" * 64)
    with pytest.raises(DataError, match="could not download") as err:
        fetch("movielens-100k", data_home=tmp_path / "home")
    assert url in str(err.value)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "home").iterdir()) == []


# --- generic files ----------------------------------------------------------------------------


def test_load_interactions_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer,sku,qty,when\nc1,A-1,2,2024-01-02T00:00:00\nc2,B-2,1,\n")
    df = load_interactions(path, {"user_id": "customer", "item_id": "sku", "weight": "qty"})
    assert df.columns == list(INTERACTION_SCHEMA)
    assert df["user_id"].dtype == pl.String
    assert df["user_id"].to_list() == ["c1", "c2"]
    assert df["weight"].to_list() == [2.0, 1.0]
    assert df["timestamp"].null_count() == 2  # "when" is not mapped
    assert df["event_type"].to_list() == ["interaction", "interaction"]


def test_parquet_round_trip(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text(
        "user_id,item_id,weight,timestamp,event_type\n1,10,1.0,100,click\n2,20,3.0,,buy\n"
    )
    original = load_interactions(csv)
    for suffix in (".parquet", ".pq"):
        pq = tmp_path / f"events{suffix}"
        original.write_parquet(pq)
        assert load_interactions(pq).equals(original)


def test_tsv_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("user_id\titem_id\n1\t2\n")
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"user_id,item_id\n1,2\n"))
    for name in ("a.tsv", "a.csv.gz"):
        df = load_interactions(tmp_path / name)
        assert df.select("user_id", "item_id").rows() == [(1, 2)]


def test_mapped_column_missing_names_column_and_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("customer,sku\nc1,A\n")
    with pytest.raises(DataError, match=r"orders\.csv.*'qty'"):
        load_interactions(path, {"user_id": "customer", "item_id": "sku", "weight": "qty"})


def test_wrong_type_names_line_and_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    rows = "".join(f"{i},{i},1.0\n" for i in range(300))
    path.write_text("user_id,item_id,weight\n" + rows + "7,8,abc\n")
    with pytest.raises(DataError, match=r"bad\.csv.*'weight'.*line 302.*'abc'"):
        load_interactions(path)


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("user_id,item_id\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    for name in ("empty.csv", "header.csv", "empty.parquet"):
        with pytest.raises(DataError, match=f"{name}: no rows"):
            load_interactions(tmp_path / name)


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"data\.xlsx: unsupported.*\.csv.*\.parquet"):
        read_table(tmp_path / "data.xlsx")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"ragged\.csv: cannot parse") as err:
        read_table(tmp_path / "ragged.csv")
    assert "\n" not in str(err.value)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: cannot parse"):
        read_table(tmp_path / "junk.parquet")


def test_load_items_users_and_files(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("customer,sku,qty\nc1,A,2\nc2,B,1\n")
    (tmp_path / "products.csv").write_text("sku,title,categories\nA,Alpha,x|y\nB,Beta,\n")
    pl.DataFrame({"customer": ["c1", "c2"], "age": [30, 40]}).write_parquet(
        tmp_path / "customers.parquet"
    )
    items = load_items(tmp_path / "products.csv", {"item_id": "sku"})
    assert items["categories"].to_list() == [["x", "y"], []]
    users = load_users(tmp_path / "customers.parquet", {"user_id": "customer"})
    assert users.columns == ["user_id", "age"]

    mapping = {"user_id": "customer", "item_id": "sku", "weight": "qty"}
    data = load_files(
        tmp_path / "orders.csv",
        tmp_path / "products.csv",
        tmp_path / "customers.parquet",
        columns=mapping,
        name="shop",
    )
    assert data.name == "shop"
    assert data.interactions["weight"].to_list() == [2.0, 1.0]
    assert data.items is not None
    assert data.items["item_id"].to_list() == ["A", "B"]
    assert data.users is not None
    assert data.users["user_id"].to_list() == ["c1", "c2"]


def test_duplicate_item_id_is_reported(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\n1,a\n1,b\n")
    with pytest.raises(DataError, match="duplicate item id"):
        load_items(tmp_path / "items.csv")


# --- the real MovieLens latest-small ------------------------------------------------------------


def test_real_latest_small(monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path(
        os.environ.get("HYBRIDREC_DATA_HOME")
        or Path(__file__).resolve().parents[3] / "shared" / "datasets"
    )
    if not (home / "ml-latest-small" / "ratings.csv").is_file():
        msg = f"MovieLens latest-small not found under {home}"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must provide it via HYBRIDREC_DATA_HOME)")
        pytest.skip(msg)
    monkeypatch.setenv("HYBRIDREC_DATA_HOME", str(home))
    data = load_dataset("movielens-latest-small", download=False)
    inter = data.interactions
    assert inter.height == 100_836
    assert inter["user_id"].n_unique() == 610
    assert data.items is not None
    assert data.items.height == 9_742
    assert inter["item_id"].is_in(data.items["item_id"].implode()).all()
    assert dict(inter.schema) == INTERACTION_SCHEMA
