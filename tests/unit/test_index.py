"""`hybridrec.index.VectorIndex`: exact and approximate search, growth, persistence."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from hybridrec.errors import ConfigError, DataError
from hybridrec.index import IndexParams, VectorIndex


def clustered(n: int, d: int = 32, centers: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(4000), clustered(50, seed=1)


def test_flat_is_exact(data):
    x, q = data
    index = VectorIndex.build(x, IndexParams(kind="flat"))
    assert index.kind == "flat" and len(index) == 4000 and index.dim == 32
    scores, ids = index.search(q, 10)
    exact = q @ x.T
    # FAISS's and numpy's kernels round differently (AVX2 vs AVX-512): near-ties may swap, so
    # the k scores must be numpy's top k (as values), and the items found must score them.
    want = np.sort(exact, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, axis=1), rtol=1e-5)
    top = exact_top(x, q, 10)
    gap = want[:, 0] - want[:, 1]
    clear = gap > 1e-4  # a clear winner must be found first
    np.testing.assert_array_equal(ids[clear, 0], top[clear, 0])
    assert np.all(np.diff(scores, axis=1) <= 1e-7)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall(data, kind):
    x, q = data
    index = VectorIndex.build(x, IndexParams(kind=kind))
    assert index.kind == kind
    _, ids = index.search(q, 20)
    want = exact_top(x, q, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(ids, want, strict=True)])
    assert recall >= 0.9, recall


def test_auto_picks_by_threshold(data):
    x, _ = data
    assert VectorIndex.build(x, IndexParams(threshold=5000)).kind == "flat"
    assert VectorIndex.build(x, IndexParams(threshold=4000)).kind == "ivf"
    assert VectorIndex.build(x, IndexParams(threshold=10, approximate="hnsw")).kind == "hnsw"


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_add_without_rebuild_and_persistence(data, kind, tmp_path: Path):
    x, q = data
    index = VectorIndex.build(x[:3000], IndexParams(kind=kind))
    new = index.add(x[3000:])
    np.testing.assert_array_equal(new, np.arange(3000, 4000))
    assert len(index) == 4000
    _, ids = index.search(x[3500:3510], 1)
    assert ids[:, 0].tolist() == list(range(3500, 3510))  # new vectors are found
    want_s, want_i = index.search(q, 10)
    for loaded in (
        VectorIndex.load(index.save(tmp_path / "sub" / "ix.faiss")),
        VectorIndex.from_array(index.to_array(), index.params),
        pickle.loads(pickle.dumps(index)),
    ):
        assert loaded.kind == kind and len(loaded) == 4000
        s, i = loaded.search(q, 10)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(s, want_s)
    assert index.to_array().dtype == np.uint8
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def test_search_params_change_results_for_ivf(data):
    x, q = data
    index = VectorIndex.build(x, IndexParams(kind="ivf", nlist=64, nprobe=1))
    _, narrow = index.search(q, 20)
    index.set_search_params(nprobe=64)  # every cell: exact
    _, wide = index.search(q, 20)
    want = exact_top(x, q, 20)
    hits = lambda ids: np.mean([len(set(a) & set(b)) for a, b in zip(ids, want, strict=True)])  # noqa: E731
    assert hits(wide) == 20 and hits(narrow) < 20


def test_padding_and_errors(data, tmp_path: Path):
    x, _ = data
    small = VectorIndex.build(x[:3], IndexParams(kind="flat"))
    scores, ids = small.search(x[:1], 5)
    assert ids[0, 3:].tolist() == [-1, -1] and np.all(np.isneginf(scores[0, 3:]))
    with pytest.raises(DataError, match="dimension 8"):
        small.search(np.ones((1, 8), np.float32), 2)
    with pytest.raises(DataError, match="dimension 8"):
        small.add(np.ones((1, 8), np.float32))
    with pytest.raises(DataError, match="NaN"):
        small.add(np.full((1, 32), np.nan, np.float32))
    with pytest.raises(ConfigError, match="k must be"):
        small.search(x[:1], 0)
    with pytest.raises(ConfigError, match="index kind"):
        IndexParams(kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no index file"):
        VectorIndex.load(tmp_path / "absent.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a FAISS index"):
        VectorIndex.load(tmp_path / "junk.faiss")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_calibrate_widens_the_search_until_the_recall_target(kind):
    # Spread-out vectors (weak clusters) and narrow settings: recall@100 starts low.
    x, q = clustered(6000, d=24, centers=200, seed=2), clustered(200, d=24, centers=200, seed=3)
    narrow = {"ivf": {"nprobe": 1}, "hnsw": {"ef_search": 8, "hnsw_m": 4}}[kind]
    index = VectorIndex.build(x, IndexParams(kind=kind, **narrow))
    want = exact_top(x, q, 100)
    before = index.recall(q, want)
    assert before < 0.9, before
    reached = index.calibrate(x, q, k=100, target=0.98)
    assert reached >= 0.98 and index.recall(q, want) == pytest.approx(reached)
    wider = index.params.nprobe if kind == "ivf" else index.params.ef_search
    assert wider > next(iter(narrow.values()))
    # Recall measured by hand agrees with the index's own.
    _, ids = index.search(q, 100)
    by_hand = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(ids, want, strict=True)])
    assert by_hand == pytest.approx(reached)
    assert VectorIndex.build(x, IndexParams(kind="flat")).calibrate(x, q) == 1.0
