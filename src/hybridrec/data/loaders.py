"""Loaders that turn MovieLens folders and generic CSV/Parquet files into canonical tables.

Every loader returns tables already passed through `hybridrec.data.schema`'s validators, so
downstream code never sees raw file columns. MovieLens 100K and 1M are headerless, latin-1
files; they are split here line by line so errors can name the exact line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hybridrec.data.datasets import fetch
from hybridrec.data.schema import (
    INTERACTION_COLUMNS,
    validate_interactions,
    validate_items,
    validate_users,
)
from hybridrec.errors import DataError

__all__ = [
    "LOADERS",
    "RawData",
    "load_dataset",
    "load_files",
    "load_interactions",
    "load_items",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_movielens_latest_small",
    "load_users",
    "read_table",
]

_CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")

# A trailing "(1995)", or a year range with a hyphen or an en dash (its start year is kept),
# ends most titles.
_YEAR = r"\s*\((\d{4})(?:[-\x{2013}]\d{4})?\)$"
_NO_GENRES = "(no genres listed)"

_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# From the ml-1m README: users.dat stores occupations as these codes.
_ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip


@dataclass(frozen=True)
class RawData:
    """A loaded dataset: canonical, validated tables.

    Attributes:
        name: The dataset's name (a registry key, or what the caller chose).
        interactions: The canonical interactions table.
        items: The item catalog, or None when the dataset has none.
        users: The user table, or None when the dataset has none.
    """

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame | None
    users: pl.DataFrame | None


# --- generic files ----------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read a CSV (``.csv``, ``.tsv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) file.

    The whole CSV is scanned to infer column types, so a stray text value deep in a numeric
    column yields a text column (and a validation error naming its line), not a parse error.

    Args:
        path: The file.
        columns: Read only these columns (all of which the file must have); None: all.

    Returns:
        The table, with at least one row.

    Raises:
        DataError: The file is missing, has an unsupported extension, cannot be parsed, or
            has no rows.
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not name.endswith(_CSV_SUFFIXES + _PARQUET_SUFFIXES):
        raise DataError(
            f"{path}: unsupported file type; use one of "
            f"{', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: no rows (an empty file)")
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            df = pl.read_parquet(path, columns=list(columns) if columns is not None else None)
        else:
            sep = "\t" if name.endswith(".tsv") else ","
            df = pl.read_csv(
                path,
                separator=sep,
                infer_schema_length=None,
                columns=list(columns) if columns is not None else None,
            )
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: no rows (an empty file)") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"{path}: cannot parse: {_first_line(exc)}") from None
    if df.height == 0:
        raise DataError(f"{path}: no rows (only a header)")
    return df


def _rename(
    df: pl.DataFrame, columns: Mapping[str, str] | None, path: Path, *, strict: bool
) -> pl.DataFrame:
    """Rename source columns to canonical names (``columns`` maps canonical → source)."""
    if not columns:
        return df
    renames: dict[str, str] = {}
    for canonical, source in columns.items():
        if source in df.columns:
            renames[source] = canonical
        elif strict:
            raise DataError(
                f"{path}: column {source!r} (mapped to {canonical!r}) not found "
                f"(found: {', '.join(df.columns)})"
            )
    # A canonical name already in the file would collide with the renamed column; the
    # explicit mapping wins.
    clashes = [c for c in renames.values() if c in df.columns and c not in renames]
    return df.drop(clashes).rename(renames)


def _file_columns(path: Path) -> list[str] | None:
    """The column names of a CSV or Parquet file from its header, or None when unreadable."""
    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            return list(pl.read_parquet_schema(path))
        sep = "\t" if name.endswith(".tsv") else ","
        return pl.read_csv(path, separator=sep, n_rows=0).columns
    except (pl.exceptions.PolarsError, OSError):
        return None


def _interaction_columns(path: Path, columns: Mapping[str, str] | None) -> list[str] | None:
    """The file's columns an interactions table is built from, or None to read them all.

    Logs often carry columns no model reads (sessions, devices, text); at a hundred million
    rows reading them costs more than everything else. When anything is amiss (an unreadable
    header, a mapped or id column missing), None: the whole file is read and validation
    reports the problem naming every column found.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    found = _file_columns(path)
    if found is None or len(set(found)) != len(found):
        return None
    sources = {canonical: canonical for canonical in (*INTERACTION_COLUMNS, "rating")}
    sources |= dict(columns or {})
    if any(src not in found for src in (columns or {}).values()):
        return None
    if sources["user_id"] not in found or sources["item_id"] not in found:
        return None
    wanted = set(sources.values()) | set(sources)
    return [c for c in found if c in wanted]


def load_interactions(path: str | Path, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Load a canonical interactions table from a CSV or Parquet file.

    Args:
        path: The file.
        columns: Canonical name → column in the file, e.g.
            ``{"user_id": "customer", "item_id": "sku", "weight": "qty"}``.

    Returns:
        The validated interactions table.

    Raises:
        DataError: The file cannot be read, a mapped column is missing, or validation fails.
    """
    path = Path(path)
    table = read_table(path, _interaction_columns(path, columns))
    return validate_interactions(_rename(table, columns, path, strict=True), source=str(path))


def load_items(path: str | Path, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Load an item catalog from a CSV or Parquet file (see `load_interactions`)."""
    path = Path(path)
    return validate_items(_rename(read_table(path), columns, path, strict=True), source=str(path))


def load_users(path: str | Path, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Load a user table from a CSV or Parquet file (see `load_interactions`)."""
    path = Path(path)
    return validate_users(_rename(read_table(path), columns, path, strict=True), source=str(path))


def load_files(
    interactions: str | Path,
    items: str | Path | None = None,
    users: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    name: str = "files",
) -> RawData:
    """Load interactions and optional item and user files into a `RawData`.

    One ``columns`` mapping spans the three files: every entry must match a column of the
    interactions file, while the item and user files use only the entries they have columns
    for (a ``"sku"`` → ``item_id`` entry applies to both interactions and items).

    Raises:
        DataError: A file cannot be read or fails validation.
    """
    inter = load_interactions(interactions, columns)
    item_df = user_df = None
    if items is not None:
        p = Path(items)
        item_df = validate_items(_rename(read_table(p), columns, p, strict=False), str(p))
    if users is not None:
        p = Path(users)
        user_df = validate_users(_rename(read_table(p), columns, p, strict=False), str(p))
    return RawData(name=name, interactions=inter, items=item_df, users=user_df)


# --- MovieLens --------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # GroupLens ships 100K and 1M in latin-1; a re-encoded UTF-8 copy decodes above.
        return raw.decode("latin-1")


def _split_file(path: Path, sep: str, names: list[str]) -> pl.DataFrame:
    """Split a headerless file into String columns, keeping each row's 1-based ``_line``."""
    # str.split("\n"), not splitlines(): latin-1 byte 0x85 decodes to a Unicode line break.
    lines = pl.Series("text", _read_text(path).split("\n"), dtype=pl.String)
    df = (
        pl.DataFrame([lines.str.strip_chars_end("\r")])
        .with_row_index("_line", offset=1)
        .filter(pl.col("text").str.strip_chars() != "")
        .with_columns(pl.col("text").str.split(sep))
    )
    bad = df.filter(pl.col("text").list.len() != len(names))
    if bad.height:
        raise DataError(
            f"{path}: line {bad['_line'][0]}: expected {len(names)} fields separated by "
            f"{sep!r}, found {bad['text'].list.len()[0]}"
        )
    return df.select("_line", *(pl.col("text").list.get(i).alias(n) for i, n in enumerate(names)))


def _to_ints(df: pl.DataFrame, columns: list[str], path: Path) -> pl.DataFrame:
    for col in columns:
        cast = df[col].str.strip_chars().cast(pl.Int64, strict=False)
        bad = cast.is_null()
        if bad.any():
            i = int(bad.arg_true()[0])
            raise DataError(
                f"{path}: line {df['_line'][i]}: column '{col}' is not an integer "
                f"(value {df[col][i]!r})"
            )
        df = df.with_columns(cast.alias(col))
    return df


def _title_and_year(column: str) -> list[pl.Expr]:
    title = pl.col(column).str.strip_chars()
    return [
        title.str.replace(_YEAR, "").alias("title"),
        title.str.extract(_YEAR, 1).cast(pl.Int64).alias("year"),
    ]


def _ratings(path: Path, sep: str) -> pl.DataFrame:
    names = ["user_id", "item_id", "weight", "timestamp"]
    df = _to_ints(_split_file(path, sep, names), names, path)
    return validate_interactions(df.select(*names, event_type=pl.lit("rating")), source=str(path))


def load_movielens_latest_small(path: str | Path) -> RawData:
    """Load MovieLens latest-small (``ratings.csv``, ``movies.csv``, ``tags.csv``, ``links.csv``).

    Items carry ``title`` (year removed), ``year`` (Int64, null when the title has none),
    ``categories`` (genres), ``tags`` (the item's distinct lowercase user tags joined with
    spaces, ``""`` when none) and ``imdb_id`` / ``tmdb_id`` (Int64, null allowed). Tags and
    links are optional files.

    Args:
        path: The ``ml-latest-small`` folder.

    Raises:
        DataError: A required file is missing or malformed.
    """
    path = Path(path)
    ratings = read_table(path / "ratings.csv").rename(
        {"userId": "user_id", "movieId": "item_id", "rating": "weight"}, strict=False
    )
    interactions = validate_interactions(
        ratings.with_columns(event_type=pl.lit("rating")), source=str(path / "ratings.csv")
    )

    movies = read_table(path / "movies.csv")
    items = movies.select(
        pl.col("movieId").alias("item_id"),
        *_title_and_year("title"),
        pl.col("genres")
        .cast(pl.String)
        .fill_null("")
        .str.split("|")
        .list.eval(pl.element().filter((pl.element() != "") & (pl.element() != _NO_GENRES)))
        .alias("categories"),
    )

    if (path / "tags.csv").is_file():
        tags = (
            read_table(path / "tags.csv")
            .select(
                pl.col("movieId").alias("item_id"),
                pl.col("tag").cast(pl.String).str.strip_chars().str.to_lowercase(),
            )
            .filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
            .group_by("item_id")
            .agg(pl.col("tag").unique().sort().str.join(" ").alias("tags"))
        )
        items = items.join(tags, on="item_id", how="left")
    else:
        items = items.with_columns(tags=pl.lit(None, dtype=pl.String))
    items = items.with_columns(pl.col("tags").fill_null(""))

    if (path / "links.csv").is_file():
        links = read_table(path / "links.csv").select(
            pl.col("movieId").alias("item_id"),
            pl.col("imdbId").cast(pl.Int64, strict=False).alias("imdb_id"),
            pl.col("tmdbId").cast(pl.Int64, strict=False).alias("tmdb_id"),
        )
        items = items.join(links, on="item_id", how="left")
    else:
        items = items.with_columns(
            imdb_id=pl.lit(None, dtype=pl.Int64), tmdb_id=pl.lit(None, dtype=pl.Int64)
        )
    items = validate_items(items, source=str(path / "movies.csv"))
    return RawData("movielens-latest-small", interactions, items, None)


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    genre_file = path / "u.genre"
    if not genre_file.is_file():
        return _ML100K_GENRES
    df = _to_ints(_split_file(genre_file, "|", ["name", "index"]), ["index"], genre_file)
    return tuple(df.sort("index")["name"].to_list())


def load_movielens_100k(path: str | Path) -> RawData:
    """Load MovieLens 100K (``u.data``, ``u.item``, ``u.user``, optional ``u.genre``).

    Items carry ``title`` (year removed), ``year`` (from the title, else the release date),
    ``categories``, ``release_date`` (Date) and ``imdb_url``; users carry ``age``,
    ``gender``, ``occupation`` and ``zip_code``.

    Args:
        path: The ``ml-100k`` folder.

    Raises:
        DataError: A file is missing or a line is malformed.
    """
    path = Path(path)
    interactions = _ratings(path / "u.data", "\t")

    genres = _ml100k_genres(path)
    flags = [f"_g{i}" for i in range(len(genres))]
    base = ["item_id", "raw_title", "release_date", "video_release_date", "imdb_url"]
    raw = _to_ints(_split_file(path / "u.item", "|", base + flags), ["item_id"], path / "u.item")
    release = pl.col("release_date").str.strip_chars().str.to_date("%d-%b-%Y", strict=False)
    items = raw.select(
        "item_id",
        *_title_and_year("raw_title"),
        pl.concat_list(
            [pl.when(pl.col(f) == "1").then(pl.lit(g)) for f, g in zip(flags, genres, strict=True)]
        )
        .list.drop_nulls()
        .alias("categories"),
        release.alias("release_date"),
        pl.when(pl.col("imdb_url") != "").then(pl.col("imdb_url")).alias("imdb_url"),
    ).with_columns(pl.col("year").fill_null(pl.col("release_date").dt.year().cast(pl.Int64)))
    items = validate_items(items, source=str(path / "u.item"))

    user_cols = ["user_id", "age", "gender", "occupation", "zip_code"]
    users = _to_ints(
        _split_file(path / "u.user", "|", user_cols), ["user_id", "age"], path / "u.user"
    ).select(user_cols)
    users = validate_users(users, source=str(path / "u.user"))
    return RawData("movielens-100k", interactions, items, users)


def load_movielens_1m(path: str | Path) -> RawData:
    """Load MovieLens 1M (``ratings.dat``, ``movies.dat``, ``users.dat``; ``::``-separated).

    Items carry ``title`` (year removed), ``year`` and ``categories``; users carry ``age``
    (the lower bound of the age bracket, as coded in the file), ``gender``, ``occupation``
    (the code's name from the README) and ``zip_code``.

    Args:
        path: The ``ml-1m`` folder.

    Raises:
        DataError: A file is missing or a line is malformed.
    """
    path = Path(path)
    interactions = _ratings(path / "ratings.dat", "::")

    movies = _to_ints(
        _split_file(path / "movies.dat", "::", ["item_id", "raw_title", "genres"]),
        ["item_id"],
        path / "movies.dat",
    )
    items = movies.select(
        "item_id",
        *_title_and_year("raw_title"),
        pl.col("genres")
        .str.split("|")
        .list.eval(pl.element().filter(pl.element() != ""))
        .alias("categories"),
    )
    items = validate_items(items, source=str(path / "movies.dat"))

    user_cols = ["user_id", "age", "gender", "occupation", "zip_code"]
    raw_users = _split_file(
        path / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip_code"]
    )
    codes = {str(i): name for i, name in enumerate(_ML1M_OCCUPATIONS)}
    users = (
        _to_ints(raw_users, ["user_id", "age"], path / "users.dat")
        .with_columns(pl.col("occupation").str.strip_chars().replace(codes))
        .select(user_cols)
    )
    users = validate_users(users, source=str(path / "users.dat"))
    return RawData("movielens-1m", interactions, items, users)


LOADERS: dict[str, Callable[[Path], RawData]] = {
    "movielens-latest-small": load_movielens_latest_small,
    "movielens-100k": load_movielens_100k,
    "movielens-1m": load_movielens_1m,
}


def load_dataset(
    name: str, *, data_home: str | Path | None = None, download: bool = True
) -> RawData:
    """Fetch a registered dataset (see `hybridrec.data.datasets.fetch`) and load it.

    Raises:
        ConfigError: ``name`` is not registered.
        DataError: The dataset is missing and cannot be downloaded, or a file is malformed.
    """
    folder = fetch(name, data_home=data_home, download=download)
    return LOADERS[name](folder)
