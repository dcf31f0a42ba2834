"""Tests for the canonical-table validation in hybridrec.data.schema."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from hybridrec.data.schema import (
    INTERACTION_COLUMNS,
    validate_interactions,
    validate_items,
    validate_users,
)
from hybridrec.errors import DataError

CANONICAL_DTYPES = {
    "user_id": pl.Int64,
    "item_id": pl.Int64,
    "weight": pl.Float64,
    "timestamp": pl.Int64,
    "event_type": pl.String,
}


@pytest.fixture
def ids() -> dict[str, list[int]]:
    return {"user_id": [1, 2, 3], "item_id": [10, 20, 30]}


# --- interactions: structure ------------------------------------------------------------------


def test_minimal_table_gets_canonical_columns_and_defaults(ids):
    out = validate_interactions(pl.DataFrame(ids))
    assert out.columns == list(INTERACTION_COLUMNS)
    assert dict(out.schema) == CANONICAL_DTYPES
    assert out["weight"].to_list() == [1.0, 1.0, 1.0]
    assert out["timestamp"].to_list() == [None, None, None]
    assert out["event_type"].to_list() == ["interaction"] * 3
    assert out["user_id"].to_list() == [1, 2, 3]


def test_extra_columns_are_dropped_and_int32_ids_widened():
    df = pl.DataFrame(
        {
            "user_id": pl.Series([1, 2], dtype=pl.Int32),
            "item_id": pl.Series([5, 6], dtype=pl.UInt16),
            "weight": pl.Series([1, 3], dtype=pl.Int8),
            "junk": ["x", "y"],
        }
    )
    out = validate_interactions(df)
    assert out.columns == list(INTERACTION_COLUMNS)
    assert dict(out.schema) == CANONICAL_DTYPES
    assert out["weight"].to_list() == [1.0, 3.0]


def test_missing_column_names_column_and_source():
    with pytest.raises(DataError) as err:
        validate_interactions(pl.DataFrame({"user_id": [1], "movie": [2]}), source="ratings.csv")
    msg = str(err.value)
    assert "ratings.csv" in msg
    assert "'item_id'" in msg
    assert "movie" in msg  # lists what was found


def test_missing_both_id_columns_are_both_named():
    with pytest.raises(DataError, match=r"missing columns 'user_id', 'item_id'"):
        validate_interactions(pl.DataFrame({"a": [1]}), source="f.csv")


def test_empty_table_is_a_data_error():
    empty = pl.DataFrame(schema={"user_id": pl.Int64, "item_id": pl.Int64})
    with pytest.raises(DataError, match=r"^events\.parquet: no rows"):
        validate_interactions(empty, source="events.parquet")


def test_non_numeric_weight_names_line_and_value(ids):
    df = pl.DataFrame({**ids, "weight": ["1.5", "abc", "2"]})
    with pytest.raises(DataError) as err:
        validate_interactions(df, source="r.csv")
    msg = str(err.value)
    assert msg.startswith("r.csv:")
    assert "'weight'" in msg
    assert "line 3" in msg  # row index 1 + header + 1-based
    assert "'abc'" in msg


def test_numeric_string_weights_are_parsed(ids):
    out = validate_interactions(pl.DataFrame({**ids, "weight": [" 1.5", "2", "3e0"]}))
    assert out["weight"].to_list() == [1.5, 2.0, 3.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_non_finite_or_missing_weight_is_reported(ids, bad):
    df = pl.DataFrame({**ids, "weight": [1.0, 2.0, bad]}, schema_overrides={"weight": pl.Float64})
    with pytest.raises(DataError, match=r"column 'weight', line 4"):
        validate_interactions(df)


def test_null_id_names_column_and_line():
    df = pl.DataFrame({"user_id": [1, None, 3], "item_id": [1, 2, 3]})
    with pytest.raises(DataError, match=r"column 'user_id', line 3: missing id"):
        validate_interactions(df)


def test_string_ids_are_stripped():
    out = validate_interactions(pl.DataFrame({"user_id": [" a ", "b\t"], "item_id": ["x ", " y"]}))
    assert out["user_id"].to_list() == ["a", "b"]
    assert out["item_id"].to_list() == ["x", "y"]
    assert out.schema["user_id"] == pl.String


def test_blank_string_id_is_an_error():
    df = pl.DataFrame({"user_id": ["a", "   "], "item_id": ["x", "y"]})
    with pytest.raises(DataError, match=r"column 'user_id', line 3: empty id"):
        validate_interactions(df)


def test_integral_float_ids_become_int64():
    out = validate_interactions(pl.DataFrame({"user_id": [1.0, 2.0], "item_id": [3.0, 40.0]}))
    assert out.schema["user_id"] == pl.Int64
    assert out.schema["item_id"] == pl.Int64
    assert out["item_id"].to_list() == [3, 40]


@pytest.mark.parametrize("bad", [1.5, float("inf"), float("-inf"), float("nan")])
def test_non_integral_float_id_is_a_data_error(bad):
    df = pl.DataFrame({"user_id": [1.0, bad], "item_id": [1, 2]})
    with pytest.raises(DataError, match=r"column 'user_id', line 3: id is not an integer"):
        validate_interactions(df)


def test_float_id_beyond_int64_is_a_data_error_not_a_polars_error():
    # 1e19 is integral but does not fit Int64; the cast must not leak a polars exception.
    df = pl.DataFrame({"user_id": [1.0, 1e19], "item_id": [1, 2]})
    with pytest.raises(DataError, match=r"'user_id', line 3"):
        validate_interactions(df)


def test_unsupported_id_dtype_is_named():
    with pytest.raises(DataError, match=r"column 'user_id' has type Boolean"):
        validate_interactions(pl.DataFrame({"user_id": [True, False], "item_id": [1, 2]}))


# --- interactions: timestamps -----------------------------------------------------------------


def test_integer_timestamps_are_kept(ids):
    df = pl.DataFrame({**ids, "timestamp": pl.Series([1, 2, 3], dtype=pl.Int32)})
    out = validate_interactions(df)
    assert out.schema["timestamp"] == pl.Int64
    assert out["timestamp"].to_list() == [1, 2, 3]


def test_float_timestamps_are_floored(ids):
    out = validate_interactions(pl.DataFrame({**ids, "timestamp": [1.9, 2.0, None]}))
    assert out["timestamp"].to_list() == [1, 2, None]


def test_numeric_string_timestamps(ids):
    out = validate_interactions(pl.DataFrame({**ids, "timestamp": ["1600000000", " 5 ", ""]}))
    assert out["timestamp"].to_list() == [1_600_000_000, 5, None]


def test_iso_string_timestamps(ids):
    df = pl.DataFrame(
        {**ids, "timestamp": ["2020-01-01T00:00:00", "2020-01-02T12:00:00", "2020-01-03T00:00:01"]}
    )
    out = validate_interactions(df)
    assert out["timestamp"].to_list() == [1_577_836_800, 1_577_966_400, 1_578_009_601]


def test_iso_dates_and_numeric_strings_can_mix():
    df = pl.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": ["100", "2020-01-01"]})
    assert validate_interactions(df)["timestamp"].to_list() == [100, 1_577_836_800]


def test_bad_timestamp_string_names_line_and_value(ids):
    df = pl.DataFrame({**ids, "timestamp": ["2020-01-01", "2020-01-02", "yesterday"]})
    with pytest.raises(DataError) as err:
        validate_interactions(df, source="log.csv")
    msg = str(err.value)
    assert msg.startswith("log.csv:")
    assert "'timestamp'" in msg
    assert "line 4" in msg
    assert "'yesterday'" in msg


def test_datetime_and_date_columns_become_epoch_seconds():
    base = {"user_id": [1, 2], "item_id": [1, 2]}
    dts = [dt.datetime(2020, 1, 1, 0, 0, 5), dt.datetime(2020, 1, 2)]
    out = validate_interactions(pl.DataFrame({**base, "timestamp": dts}))
    assert out["timestamp"].to_list() == [1_577_836_805, 1_577_923_200]
    dates = [dt.date(2020, 1, 1), dt.date(2020, 1, 2)]
    out = validate_interactions(pl.DataFrame({**base, "timestamp": dates}))
    assert out["timestamp"].to_list() == [1_577_836_800, 1_577_923_200]


def test_infinite_float_timestamp_is_a_data_error(ids):
    df = pl.DataFrame({**ids, "timestamp": [1.6e9, 1.6e9, float("inf")]})
    with pytest.raises(DataError, match=r"'timestamp', line 4"):
        validate_interactions(df)


def test_nan_float_timestamp_is_missing_or_a_data_error(ids):
    # pandas writes missing timestamps as NaN; either treat it as null or name the line,
    # but never leak a polars InvalidOperationError.
    df = pl.DataFrame({**ids, "timestamp": [1.6e9, float("nan"), 1.7e9]})
    try:
        out = validate_interactions(df)
    except DataError as err:
        assert "line 3" in str(err)
    else:
        assert out["timestamp"].to_list() == [1_600_000_000, None, 1_700_000_000]


# --- interactions: ratings and event types ----------------------------------------------------


def test_rating_column_becomes_weight_with_rating_event_type(ids):
    out = validate_interactions(pl.DataFrame({**ids, "rating": [4.5, 3, 1]}))
    assert out["weight"].to_list() == [4.5, 3.0, 1.0]
    assert out["event_type"].to_list() == ["rating"] * 3
    assert "rating" not in out.columns


def test_weight_wins_over_rating(ids):
    out = validate_interactions(pl.DataFrame({**ids, "weight": [1, 1, 1], "rating": [5, 5, 5]}))
    assert out["weight"].to_list() == [1.0, 1.0, 1.0]
    assert out["event_type"].to_list() == ["interaction"] * 3


def test_event_type_nulls_filled(ids):
    out = validate_interactions(pl.DataFrame({**ids, "event_type": ["click", None, "buy"]}))
    assert out["event_type"].to_list() == ["click", "interaction", "buy"]


# --- items and users --------------------------------------------------------------------------


def test_items_duplicate_id_is_reported_with_line():
    df = pl.DataFrame({"item_id": [1, 2, 2], "title": ["a", "b", "c"]})
    with pytest.raises(DataError, match=r"^items\.csv: column 'item_id', line 4: duplicate"):
        validate_items(df, source="items.csv")


def test_items_duplicate_after_stripping():
    with pytest.raises(DataError, match="duplicate item id"):
        validate_items(pl.DataFrame({"item_id": ["a", " a"]}))


def test_items_categories_are_split_and_titles_are_text():
    df = pl.DataFrame(
        {"item_id": [1, 2, 3, 4], "title": [1, 2, 3, None], "categories": ["a|b", "c", "", None]}
    )
    out = validate_items(df)
    assert out["categories"].to_list() == [["a", "b"], ["c"], [], []]
    assert out.schema["title"] == pl.String
    assert out["title"].to_list() == ["1", "2", "3", None]


def test_items_list_categories_are_left_alone_and_extra_columns_kept():
    df = pl.DataFrame({"item_id": [" x", "y"], "categories": [["a"], ["b", "c"]], "year": [1, 2]})
    out = validate_items(df)
    assert out["item_id"].to_list() == ["x", "y"]
    assert out["categories"].to_list() == [["a"], ["b", "c"]]
    assert out["year"].to_list() == [1, 2]


def test_items_empty_and_missing_column():
    with pytest.raises(DataError, match="no rows"):
        validate_items(pl.DataFrame(schema={"item_id": pl.Int64}))
    with pytest.raises(DataError, match=r"movies\.csv: missing column 'item_id'"):
        validate_items(pl.DataFrame({"id": [1]}), source="movies.csv")


def test_users_validation():
    out = validate_users(pl.DataFrame({"user_id": [1.0, 2.0], "age": [30, 40]}))
    assert out.schema["user_id"] == pl.Int64
    assert out["age"].to_list() == [30, 40]
    with pytest.raises(DataError, match=r"column 'user_id', line \d: duplicate user id") as err:
        validate_users(pl.DataFrame({"user_id": ["u1", "u2", "u1"]}))
    assert "'u1'" in str(err.value)
    with pytest.raises(DataError, match=r"column 'user_id', line 2: missing id"):
        validate_users(pl.DataFrame({"user_id": [None, "u2"]}))
    with pytest.raises(DataError, match="no rows"):
        validate_users(pl.DataFrame(schema={"user_id": pl.String}))
