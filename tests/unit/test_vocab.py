"""Tests for hybridrec.data.vocab.Vocab."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hybridrec.data.vocab import Vocab
from hybridrec.errors import HybridrecError, UnknownIdError


@pytest.fixture
def int_vocab() -> Vocab:
    return Vocab([30, 10, 20, 10], kind="item")


@pytest.fixture
def str_vocab() -> Vocab:
    return Vocab(["b", "c", "a", "b"], kind="user")


def test_ids_sorted_and_deduplicated(int_vocab, str_vocab):
    assert len(int_vocab) == 3
    assert int_vocab.ids.tolist() == [10, 20, 30]
    assert int_vocab.ids.dtype == np.int64
    assert int_vocab.is_integer
    assert str_vocab.ids.tolist() == ["a", "b", "c"]
    assert not str_vocab.is_integer
    assert int_vocab.to_list() == [10, 20, 30]
    assert all(type(v) is int for v in int_vocab.to_list())
    assert all(type(v) is str for v in str_vocab.to_list())


def test_round_trip_int(int_vocab):
    idx = int_vocab.index([30, 10, 20, 30])
    assert idx.dtype == np.int64
    assert idx.tolist() == [2, 0, 1, 2]
    assert int_vocab.lookup(idx).tolist() == [30, 10, 20, 30]
    assert int_vocab.index(int_vocab.lookup(np.arange(3))).tolist() == [0, 1, 2]


def test_round_trip_str(str_vocab):
    idx = str_vocab.index(["c", "a", "b"])
    assert idx.tolist() == [2, 0, 1]
    assert str_vocab.lookup(idx).tolist() == ["c", "a", "b"]


def test_from_numpy_and_polars_arrays():
    v = Vocab(np.array([3, 1, 2], dtype=np.int32))
    assert v.ids.dtype == np.int64
    assert v.index(np.array([2], dtype=np.int32)).tolist() == [1]
    s = Vocab(pl.Series(["y", "x"]).to_numpy())  # object array of str
    assert s.ids.tolist() == ["x", "y"]
    assert s.index(pl.Series(["x", "y"]).to_numpy()).tolist() == [0, 1]


def test_float_ids_are_rejected():
    with pytest.raises(TypeError, match="integers or strings"):
        Vocab([1.5, 2.5])


def test_unknown_ids_raise_and_list_them(int_vocab):
    with pytest.raises(UnknownIdError) as err:
        int_vocab.index([10, 99, 20, 7])
    e = err.value
    assert e.kind == "item"
    assert e.ids == [99, 7]
    assert all(type(i) is int for i in e.ids)
    assert str(e) == "unknown item ids: 99, 7"
    assert isinstance(e, KeyError)
    assert isinstance(e, HybridrecError)


def test_unknown_id_message_single_and_many(str_vocab):
    with pytest.raises(UnknownIdError) as err:
        str_vocab.index(["zz"])
    assert str(err.value) == "unknown user id: 'zz'"
    assert err.value.ids == ["zz"]
    with pytest.raises(UnknownIdError) as err:
        str_vocab.index([f"x{i}" for i in range(8)])
    assert str(err.value).endswith("(+3 more)")
    assert len(err.value.ids) == 8


def test_mask_gives_minus_one(int_vocab, str_vocab):
    assert int_vocab.index([5, 10, 31, 30], missing="mask").tolist() == [-1, 0, -1, 2]
    assert str_vocab.index(["a", "zz", "0"], missing="mask").tolist() == [0, -1, -1]


def test_ids_larger_than_all_and_smaller_than_all(int_vocab):
    # searchsorted returns len(ids) for values past the end; must not index out of bounds.
    assert int_vocab.index([1000, -1000], missing="mask").tolist() == [-1, -1]


def test_coerce_text_to_int(int_vocab):
    out = int_vocab.coerce(["42", " 10 ", "-3"])
    assert out.dtype == np.int64
    assert out.tolist() == [42, 10, -3]
    assert int_vocab.index(["10", "30"]).tolist() == [0, 2]
    assert int_vocab.index(np.array(["20"])).tolist() == [1]


def test_coerce_int_to_text(str_vocab):
    v = Vocab(["1", "2", "x"])
    assert v.index([2, 1]).tolist() == [1, 0]
    assert str_vocab.coerce([1]).tolist() == ["1"]


def test_non_numeric_text_against_int_vocab_is_unknown(int_vocab):
    with pytest.raises(UnknownIdError) as err:
        int_vocab.index(["abc"])
    assert err.value.ids == ["abc"]
    assert str(err.value) == "unknown item id: 'abc'"
    assert int_vocab.index(["abc", "x1"], missing="mask").tolist() == [-1, -1]


def test_one_non_numeric_text_does_not_poison_known_ids(int_vocab):
    # "10" is a known id; only "abc" is unknown, whatever else is in the batch.
    assert int_vocab.index(["abc", "10"], missing="mask").tolist() == [-1, 0]
    with pytest.raises(UnknownIdError) as err:
        int_vocab.index(["10", "abc"])
    assert err.value.ids == ["abc"]


def test_huge_numeric_text_is_unknown_not_a_crash(int_vocab):
    with pytest.raises(UnknownIdError):
        int_vocab.index(["99999999999999999999"])


def test_unsigned_int_arrays_are_found(int_vocab):
    # np.uint arrays (e.g. from a Parquet UInt column) hold valid integer ids.
    assert int_vocab.index(np.array([10, 30], dtype=np.uint32)).tolist() == [0, 2]
    assert int_vocab.index(np.array([20], dtype=np.uint64)).tolist() == [1]


def test_contains(int_vocab, str_vocab):
    assert 10 in int_vocab
    assert "20" in int_vocab
    assert 11 not in int_vocab
    assert "nope" not in int_vocab
    assert "a" in str_vocab
    assert "d" not in str_vocab


def test_equality():
    assert Vocab([2, 1]) == Vocab([1, 2, 2])
    assert Vocab([1, 2]) != Vocab([1, 3])
    assert Vocab(["1", "2"]) != Vocab([1, 2])
    assert Vocab([1]) != [1]
    assert Vocab([]) == Vocab([])
    with pytest.raises(TypeError):
        hash(Vocab([1]))


def test_empty_vocab():
    v = Vocab([], kind="user")
    assert len(v) == 0
    assert v.to_list() == []
    assert v.index([]).tolist() == []
    assert v.index([1, "a"], missing="mask").tolist() == [-1, -1]
    assert v.lookup([]).size == 0
    assert 1 not in v
    with pytest.raises(UnknownIdError, match="unknown user id: 1"):
        v.index([1])


def test_lookup_out_of_range(int_vocab):
    with pytest.raises(IndexError):
        int_vocab.lookup([-1])
    with pytest.raises(IndexError):
        int_vocab.lookup([0, 3])


def test_repr(int_vocab):
    assert repr(int_vocab) == "Vocab(item, n=3)"
