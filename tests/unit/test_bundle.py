"""Bundles: round trips, hashes before unpickling, memory mapping, precision, the store."""

from __future__ import annotations

import json
import mmap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridrec.bundle import Bundle, BundleOptions, Compression, ModelStore, TopN, write_bundle
from hybridrec.bundle.format import cast_float64, describe_file, verify_files
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import ConfigError, DataError, IntegrityError, StoreConflictError
from hybridrec.models import Recommender, create_model
from hybridrec.serving import ModelService

CF_PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "als": {"factors": 16, "iterations": 10, "use_gpu": False, "random_state": 0},
    "itemknn": {"neighbors": 20},
    "ease": {"regularization": 10.0},
}


@pytest.fixture(scope="module")
def cf_models(planted_data: InteractionData) -> dict[str, Recommender]:
    return {name: create_model(name, p).fit(planted_data) for name, p in CF_PARAMS.items()}


def save_version(
    root: Path,
    models: dict[str, Recommender],
    *,
    options: BundleOptions | None = None,
    top_n: TopN | None = None,
    promote: bool = True,
) -> str:
    store = ModelStore(root)

    def write(path: Path) -> dict[str, Any]:
        return {
            **write_bundle(path, models, options=options, top_n=top_n),
            "default_model": "als",
        }

    return store.write_version(write, promote=promote)


def assert_same_answers(a: Recommender, b: Recommender, users: np.ndarray) -> None:
    ra, rb = a.recommend(users, 10), b.recommend(users, 10)
    np.testing.assert_array_equal(ra.indices, rb.indices)
    np.testing.assert_array_equal(ra.scores, rb.scores)
    # Fold-in of a user the model has never seen.
    history = {"new-user": [1000, 1003, 1006]}
    fa = a.recommend(["new-user"], 5, history=history)
    fb = b.recommend(["new-user"], 5, history=history)
    np.testing.assert_array_equal(fa.indices, fb.indices)
    np.testing.assert_allclose(fa.scores, fb.scores, rtol=1e-6)
    sa, sb = a.similar_items([1000, 1001], 5), b.similar_items([1000, 1001], 5)
    np.testing.assert_array_equal(sa.indices, sb.indices)


# ---- format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "none"),
        ("none", "none"),
        ("zlib", "zlib:3"),
        ("lz4:1", "lz4:1"),
        ("XZ:9", "xz:9"),
        ("gzip", "gzip:3"),
    ],
)
def test_compression_spec_parses(spec: str | None, expected: str) -> None:
    assert str(Compression.parse(spec)) == expected


@pytest.mark.parametrize("spec", ["zip", "zlib:0", "zlib:10", "lz4:fast"])
def test_bad_compression_spec_is_a_clear_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="compression"):
        Compression.parse(spec)


def test_describe_file_and_verify(tmp_path: Path) -> None:
    import hashlib

    import blake3

    path = tmp_path / "f.bin"
    data = np.random.default_rng(0).bytes(25_000)
    path.write_bytes(data)
    entry = describe_file(path)
    assert entry == {
        "size": 25_000,
        "sha256": hashlib.sha256(data).hexdigest(),
        "blake3": blake3.blake3(data).hexdigest(),
    }
    verify_files(tmp_path, {"f.bin": entry}, whole=True)
    corrupted = bytearray(data)
    corrupted[21_000] ^= 0x01
    path.write_bytes(bytes(corrupted))
    with pytest.raises(IntegrityError, match=r"f\.bin: BLAKE3 mismatch"):
        verify_files(tmp_path, {"f.bin": entry})
    # Without a BLAKE3 (or with whole=True) SHA-256 is checked, and catches it too.
    sha_only = {"size": entry["size"], "sha256": entry["sha256"]}
    with pytest.raises(IntegrityError, match=r"f\.bin: SHA-256 mismatch"):
        verify_files(tmp_path, {"f.bin": sha_only})
    path.write_bytes(data)
    bad_sha = {**entry, "sha256": "0" * 64}
    verify_files(tmp_path, {"f.bin": bad_sha})
    with pytest.raises(IntegrityError, match=r"f\.bin: SHA-256 mismatch"):
        verify_files(tmp_path, {"f.bin": bad_sha}, whole=True)


def test_verify_names_missing_and_resized_files(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    entry = describe_file(path)
    path.write_bytes(b"abcd")
    with pytest.raises(IntegrityError, match=r"a\.bin: size 4 bytes, manifest says 3"):
        verify_files(tmp_path, {"a.bin": entry})
    path.unlink()
    with pytest.raises(IntegrityError, match=r"a\.bin: missing"):
        verify_files(tmp_path, {"a.bin": entry})


def test_cast_float64_halves_float64_arrays_only() -> None:
    import scipy.sparse as sp

    state = {
        "f": np.ones((3, 2)),
        "i": np.arange(3),
        "s": sp.csr_matrix(np.eye(2)),
        "nested": [np.zeros(2, np.float32)],
    }
    out = cast_float64(state)
    assert out["f"].dtype == np.float32
    assert out["i"].dtype == state["i"].dtype
    assert out["s"].dtype == np.float32
    assert out["nested"][0].dtype == np.float32
    assert state["f"].dtype == np.float64  # the input is not modified


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["none", "zlib:1", "gzip:1", "xz:1", "lz4:1"])
def test_round_trip_gives_identical_recommendations(
    cf_models: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path, compress: str
) -> None:
    options = BundleOptions(Compression.parse(compress))
    version = save_version(tmp_path, cf_models, options=options)
    bundle = Bundle.open(tmp_path / version)
    assert bundle.model_names == list(cf_models)
    users = planted_data.users.ids
    for name, model in cf_models.items():
        assert_same_answers(model, bundle.model(name), users)


def test_shared_vocabularies_and_matrix_are_stored_once(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    import joblib

    version = save_version(tmp_path, cf_models)
    payload = joblib.load(tmp_path / version / "cf.joblib", mmap_mode="r")
    assert len(payload["bases"]) == 1
    assert {entry["base"] for entry in payload["models"].values()} == {0}
    bundle = Bundle.open(tmp_path / version)
    first = bundle.model("als")
    for name in cf_models:
        assert bundle.model(name).users_ is first.users_


def test_uncompressed_bundle_is_memory_mapped(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    version = save_version(tmp_path, cf_models)
    als = Bundle.open(tmp_path / version).model("als")
    factors = als.user_factors_  # type: ignore[attr-defined]
    # Served as a plain ndarray view (no memmap overhead per index) of the mapped file.
    assert type(factors) is np.ndarray and _mapped(factors)
    assert not factors.flags.writeable
    # A compressed bundle is read into memory (it cannot be mapped).
    zipped = save_version(tmp_path, cf_models, options=BundleOptions(Compression.parse("lz4")))
    als_z = Bundle.open(tmp_path / zipped).model("als")
    assert not _mapped(als_z.user_factors_)  # type: ignore[attr-defined]


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array``'s memory belongs to a memory map (through its chain of bases)."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap | np.memmap):
            return True
        base = getattr(base, "base", None)
    return False


def test_compressed_bundle_is_smaller(cf_models: dict[str, Recommender], tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    plain = save_version(tmp_path, cf_models)
    zipped = save_version(tmp_path, cf_models, options=BundleOptions(Compression.parse("zlib:6")))
    assert store.size(zipped) < store.size(plain)


def test_float32_option_halves_float64_state_and_keeps_rankings(
    planted_data: InteractionData, tmp_path: Path
) -> None:
    ease = create_model("ease", {"regularization": 10.0, "dtype": "float64"}).fit(planted_data)
    assert ease.weights_.dtype == np.float64  # type: ignore[attr-defined]
    full = save_version(tmp_path, {"ease": ease})
    half = save_version(tmp_path, {"ease": ease}, options=BundleOptions(float32=True))
    store = ModelStore(tmp_path)
    # The file shrinks by half the weights' bytes (the rest is shared data, not float64).
    saved = store.size(full) - store.size(half)
    assert saved >= 0.95 * ease.weights_.nbytes / 2  # type: ignore[attr-defined]
    loaded = Bundle.open(tmp_path / half)
    assert loaded.manifest["bundle"]["float32"] is True
    small = loaded.model("ease")
    assert small.weights_.dtype == np.float32  # type: ignore[attr-defined]
    users = planted_data.users.ids
    np.testing.assert_array_equal(
        ease.recommend(users, 10).indices, small.recommend(users, 10).indices
    )


def test_precomputed_top_n_answers_like_the_model(
    cf_models: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    als = cf_models["als"]
    users = planted_data.users
    top = TopN.from_recommendations("als", als.recommend(users.ids[::-1], 20), users)
    assert top.rows == 20 * len(users)
    version = save_version(tmp_path, cf_models, top_n=top)
    bundle = Bundle.open(tmp_path / version)
    assert bundle.top_n is not None and bundle.top_n.k == 20
    got = bundle.recommend(users.ids[:7], 10, model="als")
    want = als.recommend(users.ids[:7], 10)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
    # Beyond N, or with new history, the model answers.
    longer = bundle.recommend(users.ids[:3], 25, model="als")
    np.testing.assert_array_equal(longer.indices, als.recommend(users.ids[:3], 25).indices)


def test_known_users_without_a_precomputed_row_get_the_models_answer(
    cf_models: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    als = cf_models["als"]
    users = planted_data.users
    # Rows for every other user only; and an older bundle's top-N (no ``held``) alike.
    top = TopN.from_recommendations("als", als.recommend(users.ids[::2], 20), users)
    old = TopN(top.model, top.k, top.indptr, top.items, top.scores)
    for stored in (top, old):
        root = tmp_path / ("new" if stored is top else "old")
        bundle = Bundle.open(root / save_version(root, cf_models, top_n=stored))
        asked = users.ids[:9]
        got = bundle.recommend(asked, 10, model="als")
        want = als.recommend(asked, 10)
        assert (got.indices >= 0).all()  # nobody gets an empty list
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5)
        assert stored.holds(users.index(asked)).tolist() == [True, False] * 4 + [True]


# ---- integrity ---------------------------------------------------------------------------------


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if offset is None else offset
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_byte_is_refused_before_anything_is_unpickled(
    cf_models: dict[str, Recommender], tmp_path: Path, monkeypatch: Any
) -> None:
    version = save_version(tmp_path, cf_models)
    flip_byte(tmp_path / version / "cf.joblib")
    calls: list[Path] = []
    import hybridrec.bundle.bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "load_part", lambda path, **_: calls.append(path))
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
        Bundle.open(tmp_path / version)
    assert calls == []


def test_flipped_byte_anywhere_is_found(cf_models: dict[str, Recommender], tmp_path: Path) -> None:
    version = save_version(tmp_path, cf_models)
    path = tmp_path / version / "cf.joblib"
    original = path.read_bytes()
    for offset in (0, len(original) // 3, len(original) - 1):
        flip_byte(path, offset=offset)
        with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
            Bundle.open(path.parent)
        path.write_bytes(original)
    Bundle.open(path.parent)


def test_a_part_changed_after_open_is_checked_again_before_loading(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    version = save_version(tmp_path, cf_models)
    bundle = Bundle.open(tmp_path / version, eager=())
    flip_byte(tmp_path / version / "cf.joblib")
    with pytest.raises(IntegrityError, match=r"cf\.joblib"):
        bundle.model("als")


def test_unsupported_format_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": 1, "models": {}}')
    with pytest.raises(DataError, match="format 1"):
        Bundle.open(tmp_path)


def test_parts_load_once_under_concurrency(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    version = save_version(tmp_path, cf_models)
    bundle = Bundle.open(tmp_path / version, eager=())
    assert bundle.loaded_parts() == []
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def ask() -> None:
        barrier.wait()
        results.append(bundle.recommend([1, 2], 5, model="itemknn").indices)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert bundle.load_counts == {"cf": 1}
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


# ---- the store -----------------------------------------------------------------------------------


def test_promote_rollback_and_history(cf_models: dict[str, Recommender], tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    v1 = save_version(tmp_path, cf_models)
    v2 = save_version(tmp_path, cf_models)
    v3 = save_version(tmp_path, cf_models, promote=False)
    assert store.versions() == sorted([v1, v2, v3])
    assert store.current() == v2
    store.promote(v3)
    assert store.history() == [v1, v2, v3]
    assert store.rollback() == v2
    assert store.current() == v2
    assert store.rollback() == v1
    with pytest.raises(DataError, match="no version before"):
        store.rollback()
    assert store.current() == v1


def test_rollback_expecting_a_current_version_refuses_when_it_moved(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    v1 = save_version(tmp_path, cf_models)
    v2 = save_version(tmp_path, cf_models)
    v3 = save_version(tmp_path, cf_models)
    # Two clients both saw v3 as current and clicked rollback: only the first goes back.
    assert store.rollback(expect=v3) == v2
    with pytest.raises(StoreConflictError, match=f"is {v2}, not {v3}"):
        store.rollback(expect=v3)
    assert store.current() == v2 and store.history() == [v1, v2]


def test_rollback_after_a_promotion_that_died_before_moving_current(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    v1 = save_version(tmp_path, cf_models)
    v2 = save_version(tmp_path, cf_models)
    v3 = save_version(tmp_path, cf_models, promote=False)
    # promote(v3) wrote history.json, then died before the current pointer.
    history = json.loads((tmp_path / "history.json").read_text())
    history["promoted"].append(v3)
    (tmp_path / "history.json").write_text(json.dumps(history))
    assert store.current() == v2
    assert store.rollback() == v1  # back from what is current, not "back" to v3


def test_rollback_without_history_uses_the_previous_version(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    v1 = save_version(tmp_path, cf_models)
    v2 = save_version(tmp_path, cf_models)
    (tmp_path / "history.json").unlink()
    assert store.current() == v2
    assert store.rollback() == v1


def test_prune_keeps_newest_current_and_rollback_target(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    versions = [save_version(tmp_path, {"popularity": cf_models["popularity"]}) for _ in range(5)]
    store.promote(versions[0])
    removed = store.prune(2)
    assert sorted(removed) == versions[1:3]
    assert store.versions() == [versions[0], versions[3], versions[4]]
    with pytest.raises(DataError, match="keep"):
        store.prune(0)


def test_failed_write_leaves_no_version_and_keeps_current(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)
    v1 = save_version(tmp_path, cf_models)

    def broken(path: Path) -> dict[str, Any]:
        write_bundle(path, cf_models)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.write_version(broken)
    assert store.versions() == [v1]
    assert store.current() == v1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_stale_temp_of_a_dead_writer_is_removed(
    cf_models: dict[str, Recommender], tmp_path: Path
) -> None:
    save_version(tmp_path, cf_models)
    stale = tmp_path / ".tmp-999999999-abc"
    stale.mkdir()
    (stale / "cf.joblib").write_bytes(b"half")
    save_version(tmp_path, cf_models)
    assert not stale.exists()


# ---- the service -----------------------------------------------------------------------------


def test_service_refuses_a_corrupted_version_and_keeps_serving(
    cf_models: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    v1 = save_version(tmp_path, cf_models)
    service = ModelService(tmp_path)
    assert not service.ready
    first = service.reload()
    assert first.ok and first.version == v1
    before = service.bundle.recommend([1, 2, 3], 5).indices
    v2 = save_version(tmp_path, cf_models)
    flip_byte(tmp_path / v2 / "cf.joblib")
    result = service.reload()
    assert not result.ok
    assert result.version == v1
    assert result.error is not None and "cf.joblib" in result.error
    assert service.bundle.version == v1
    np.testing.assert_array_equal(service.bundle.recommend([1, 2, 3], 5).indices, before)
    # A good version is taken.
    v3 = save_version(tmp_path, cf_models)
    assert service.reload().version == v3
    assert service.bundle.version == v3


# ---- content part (lazy) and hybrids (references) ----------------------------------------------


@pytest.fixture(scope="module")
def with_content(
    cf_models: dict[str, Recommender], planted_data: InteractionData
) -> dict[str, Recommender]:
    import dataclasses

    from test_contract import planted_catalog

    data = dataclasses.replace(
        planted_data, items_table=planted_catalog(planted_data.items.to_list())
    )
    content = create_model("content", {"show_progress": False, "cache": False}).fit(data)
    hybrid = create_model("hybrid", {"components": {"als": 0.5, "itemknn": 0.3, "content": 0.2}})
    hybrid.attach({**cf_models, "content": content}).fit(planted_data)
    return {**cf_models, "content": content, "hybrid": hybrid}


def test_content_and_hybrid_round_trip(
    with_content: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    import joblib

    version = save_version(tmp_path, with_content)
    manifest = Bundle.open(tmp_path / version, eager=()).manifest
    assert manifest["parts"]["content"]["models"] == ["content"]
    assert set(manifest["files"]) == {"cf.joblib", "content.joblib"}
    # The hybrid refers to its components; nothing is stored twice.
    payload = joblib.load(tmp_path / version / "cf.joblib", mmap_mode="r")
    refs = payload["models"]["hybrid"]["state"]["components"]
    assert refs == {
        "als": {"ref": "als"},
        "itemknn": {"ref": "itemknn"},
        "content": {"ref": "content"},
    }
    bundle = Bundle.open(tmp_path / version)
    users = planted_data.users.ids
    for name in ("content", "hybrid"):
        assert_same_answers(with_content[name], bundle.model(name), users)


def test_eight_cold_requests_load_the_content_part_once(
    with_content: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    save_version(tmp_path, with_content)
    service = ModelService(tmp_path)
    assert service.reload().ok
    bundle = service.bundle
    assert bundle.loaded_parts() == ["cf"]  # content waits for its first request
    assert bundle.load_counts["content"] == 0
    barrier = threading.Barrier(8)
    answers: list[Any] = []
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            barrier.wait()
            user = planted_data.users.ids[i]
            answers.append((i, service.bundle.recommend([user], 5, model="content").indices))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert bundle.load_counts["content"] == 1
    assert sorted(bundle.loaded_parts()) == ["cf", "content"]
    expected = with_content["content"]
    for i, got in answers:
        user = planted_data.users.ids[i]
        np.testing.assert_array_equal(got, expected.recommend([user], 5).indices)
