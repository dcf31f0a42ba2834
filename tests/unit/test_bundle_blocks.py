"""Block hashes: a memory-mapped part is checked as it is used, and no byte before its use.

The bundles here are written with 512-byte blocks (instead of 1 MiB) so that the small test
models span many blocks: the ALS factors, the vocabularies and the precomputed rows each
lie in blocks of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest

import hybridrec.bundle.bundle as bundle_mod
from hybridrec.bundle import (
    Bundle,
    BundleOptions,
    Compression,
    ModelStore,
    TopN,
    open_bundle,
    write_bundle,
)
from hybridrec.bundle import format as fmt
from hybridrec.bundle.format import mapped_extents, verify_files
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import IntegrityError
from hybridrec.models import Recommender
from hybridrec.serving import ModelService

BLOCK = 512


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "BLOCK_BYTES", BLOCK)


@pytest.fixture(scope="module")
def top(components: dict[str, Recommender], planted_data: InteractionData) -> TopN:
    """ALS rows for every other user."""
    users = planted_data.users
    return TopN.from_recommendations("als", components["als"].recommend(users.ids[::2], 12), users)


def save(
    root: Path,
    models: dict[str, Recommender],
    top: TopN | None,
    options: BundleOptions | None = None,
) -> Path:
    def write(path: Path) -> dict[str, Any]:
        return {
            **write_bundle(path, models, top_n=top, options=options),
            "default_model": "als",
        }

    return root / ModelStore(root).write_version(write)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def inner_block(extent: tuple[int, int], avoid: set[int]) -> int:
    """An offset inside ``extent`` whose block is in ``avoid`` for no reason."""
    for block in range(-(-extent[0] // BLOCK), extent[1] // BLOCK):
        if block not in avoid:
            return block * BLOCK + BLOCK // 2
    raise AssertionError(f"no block of its own in {extent}")


def layout(version: Path) -> dict[str, Any]:
    """Where the ALS factors, vocabularies and stored rows lie, and the pickle blocks."""
    bundle = Bundle.open(version, verify=False)
    file = version / "cf.joblib"
    payload = bundle._load("cf")
    entry = payload["models"]["als"]
    base = payload["bases"][entry["base"]]
    blocks = json.loads((version / "manifest.json").read_text())["files"]["cf.joblib"]["blocks"]
    read_by_row_user = fmt.blocks_of(
        mapped_extents((base["users"], base["items"], payload["top_n"]), file), BLOCK
    )
    return {
        "factors": max(mapped_extents(entry["state"]["user_factors"], file)),
        "top_items": mapped_extents(payload["top_n"]["items"], file)[0],
        "row_user": read_by_row_user,
        "pickle": set(blocks["pickle"]),
    }


def test_manifest_holds_each_blocks_blake3_and_the_pickle_blocks(
    components: dict[str, Recommender], top: TopN, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    entry = json.loads((version / "manifest.json").read_text())["files"]["cf.joblib"]
    data = (version / "cf.joblib").read_bytes()
    spec = entry["blocks"]
    assert spec["bytes"] == BLOCK
    assert len(spec["blake3"]) == -(-len(data) // BLOCK)
    for b in (0, len(spec["blake3"]) // 2, len(spec["blake3"]) - 1):
        assert spec["blake3"][b] == blake3.blake3(data[b * BLOCK : (b + 1) * BLOCK]).hexdigest()
    # The pickle opens and ends the file; the arrays between fill most blocks.
    assert {0, len(spec["blake3"]) - 1} <= set(spec["pickle"])
    assert len(spec["pickle"]) < len(spec["blake3"]) / 2


def test_a_stored_row_is_answered_hashing_only_the_blocks_it_reads(
    components: dict[str, Recommender], top: TopN, planted_data: InteractionData, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    where = layout(version)
    bundle = Bundle.open(version, lazy=True)
    user = planted_data.users.ids[0]
    got = bundle.recommend([user], 10, model="als")
    want = components["als"].recommend([user], 10)
    np.testing.assert_array_equal(got.indices, want.indices)
    checked = bundle._checked["cf.joblib"]
    assert checked == where["pickle"] | where["row_user"]
    assert bundle.loaded_parts() == ["cf"] and not bundle._models  # ALS was not built
    # A user without a row builds ALS: its factors are checked then.
    other = planted_data.users.ids[1]
    np.testing.assert_array_equal(
        bundle.recommend([other], 10, model="als").indices,
        components["als"].recommend([other], 10).indices,
    )
    start, end = where["factors"]
    assert set(range(start // BLOCK, (end - 1) // BLOCK + 1)) <= bundle._checked["cf.joblib"]


def test_a_flipped_factor_byte_is_refused_when_als_is_built(
    components: dict[str, Recommender], top: TopN, planted_data: InteractionData, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    where = layout(version)
    flip(version / "cf.joblib", inner_block(where["factors"], where["pickle"] | where["row_user"]))
    # Opened whole (`bundle promote`, `ab start`), the version is refused at once.
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch \("):
        Bundle.open(version)
    bundle = open_bundle(tmp_path)  # lazy, as `hybridrec recommend` and servers open it
    # The stored row does not read the factors: it is answered, from checked bytes.
    assert bundle.recommend([planted_data.users.ids[0]], 5, model="als").indices.shape == (1, 5)
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes \d+-\d+"):
        bundle.recommend([planted_data.users.ids[1]], 5, model="als")
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
        Bundle.open(version, lazy=True).check_all()
    # Not memory-mapped, every byte is read at once: checked whole at open.
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
        Bundle.open(version, mmap=False, lazy=True)
    with pytest.raises(IntegrityError, match=r"cf\.joblib"):
        verify_files(version, json.loads((version / "manifest.json").read_text())["files"])


def test_a_flipped_byte_of_the_stored_rows_is_refused_before_they_answer(
    components: dict[str, Recommender], top: TopN, planted_data: InteractionData, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    where = layout(version)
    flip(version / "cf.joblib", inner_block(where["top_items"], where["pickle"]))
    bundle = Bundle.open(version, lazy=True)
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes"):
        bundle.recommend([planted_data.users.ids[0]], 5, model="als")


def test_a_flipped_pickle_byte_is_refused_before_anything_is_unpickled(
    components: dict[str, Recommender], top: TopN, tmp_path: Path, monkeypatch: Any
) -> None:
    version = save(tmp_path, components, top)
    pickled = sorted(layout(version)["pickle"])
    flip(version / "cf.joblib", pickled[len(pickled) // 2] * BLOCK + 1)
    calls: list[Path] = []
    monkeypatch.setattr(bundle_mod, "load_part", lambda path, **_: calls.append(path))
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes"):
        Bundle.open(version, lazy=True)
    assert calls == []


def test_a_server_refuses_a_version_with_a_bad_block_at_reload(
    components: dict[str, Recommender], top: TopN, tmp_path: Path
) -> None:
    good = save(tmp_path, components, top)
    service = ModelService(tmp_path)
    assert service.reload().version == good.name
    bad = save(tmp_path, components, top)
    where = layout(bad)
    flip(bad / "cf.joblib", inner_block(where["factors"], where["pickle"] | where["row_user"]))
    result = service.reload()
    assert not result.ok and result.error is not None and "BLAKE3 mismatch" in result.error
    assert service.bundle.version == good.name


def test_compressed_parts_have_no_block_hashes_and_are_checked_whole(
    components: dict[str, Recommender], top: TopN, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top, BundleOptions(Compression.parse("zlib:1")))
    entry = json.loads((version / "manifest.json").read_text())["files"]["cf.joblib"]
    assert "blocks" not in entry
    flip(version / "cf.joblib", entry["size"] // 2)
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch \("):
        Bundle.open(version, lazy=True)


def test_bundle_verify_checks_the_block_hashes_too(
    components: dict[str, Recommender], top: TopN, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    files = json.loads((version / "manifest.json").read_text())["files"]
    verify_files(version, files, whole=True)
    files["cf.joblib"]["blocks"]["blake3"][3] = "0" * 64
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes 1536-2048"):
        verify_files(version, files, whole=True)
