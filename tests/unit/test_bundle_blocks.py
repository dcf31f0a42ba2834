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


def user_row(version: Path, user: int) -> Any:
    """User ``user``'s ALS factor row (a view of the mapped part)."""
    entry = Bundle.open(version, verify=False)._load("cf")["models"]["als"]
    return entry["state"]["user_factors"][user : user + 1]


def dot_blocks(version: Path, user: int) -> set[int]:
    """The blocks a factor answer for user index ``user`` reads (beyond the vocabularies)."""
    payload = Bundle.open(version, verify=False)._load("cf")
    entry = payload["models"]["als"]
    seen = payload["bases"][entry["base"]]["user_items"]
    start, end = int(seen.indptr[user]), int(seen.indptr[user + 1])
    used = (
        entry["state"]["user_factors"][user : user + 1],
        entry["state"]["item_factors"],
        seen.indptr[user : user + 2],
        seen.indices[start:end],
    )
    return fmt.blocks_of(mapped_extents(used, version / "cf.joblib"), BLOCK)


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
    # A user without a row is answered from ALS's stored factors, ALS still not built:
    # only that user's factor row, the item factors and the user's seen items are checked.
    other = planted_data.users.ids[1]
    got = bundle.recommend([other], 10, model="als")
    want = components["als"].recommend([other], 10)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert not bundle._models
    assert bundle._checked["cf.joblib"] == checked | dot_blocks(version, 1)
    start, end = where["factors"]
    factor_blocks = set(range(start // BLOCK, (end - 1) // BLOCK + 1))
    assert not factor_blocks <= bundle._checked["cf.joblib"]
    # Building ALS (the CLI and the service do) checks its factors whole.
    bundle.model("als")
    assert factor_blocks <= bundle._checked["cf.joblib"]


def test_a_flipped_factor_byte_is_refused_when_als_is_built(
    components: dict[str, Recommender], top: TopN, planted_data: InteractionData, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    where = layout(version)
    read = where["pickle"] | where["row_user"] | dot_blocks(version, 1)
    flip(version / "cf.joblib", inner_block(where["factors"], read))
    # Opened whole (`bundle promote`, `ab start`), the version is refused at once.
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch \("):
        Bundle.open(version)
    bundle = open_bundle(tmp_path)  # lazy, as `hybridrec recommend` and servers open it
    # The stored row and user 1's factors do not read the flipped block: both are
    # answered, from checked bytes; building ALS reads it, and is refused.
    assert bundle.recommend([planted_data.users.ids[0]], 5, model="als").indices.shape == (1, 5)
    np.testing.assert_array_equal(
        bundle.recommend([planted_data.users.ids[1]], 5, model="als").indices,
        components["als"].recommend([planted_data.users.ids[1]], 5).indices,
    )
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes \d+-\d+"):
        bundle.model("als")
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
        Bundle.open(version, lazy=True).check_all()
    # Not memory-mapped, every byte is read at once: checked whole at open.
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch"):
        Bundle.open(version, mmap=False, lazy=True)
    with pytest.raises(IntegrityError, match=r"cf\.joblib"):
        verify_files(version, json.loads((version / "manifest.json").read_text())["files"])


def test_a_flipped_byte_of_a_users_factor_row_is_refused_before_it_answers(
    components: dict[str, Recommender], top: TopN, planted_data: InteractionData, tmp_path: Path
) -> None:
    version = save(tmp_path, components, top)
    where = layout(version)
    # A user without a stored row whose factor row has a block without pickle bytes.
    for user in range(1, len(planted_data.users), 2):
        row = mapped_extents(user_row(version, user), version / "cf.joblib")[0]
        middle = (row[0] + row[1]) // 2
        if middle // BLOCK not in where["pickle"]:
            break
    assert not top.holds(np.array([user])).any()
    flip(version / "cf.joblib", middle)
    bundle = Bundle.open(version, lazy=True)
    with pytest.raises(IntegrityError, match=r"cf\.joblib: BLAKE3 mismatch in bytes"):
        bundle.recommend([planted_data.users.ids[user]], 5, model="als")
    assert not bundle._models and where["pickle"] <= bundle._checked["cf.joblib"]


def test_factor_answers_are_the_models_own(
    components: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    """Stored factors answer exactly as ALS does: every user, every k, batches too."""
    version = save(tmp_path, components, None)
    als = components["als"]
    users = planted_data.users.ids
    n_items = len(planted_data.items)
    for k in (1, 7, n_items, n_items + 5):
        bundle = Bundle.open(version, lazy=True)
        got = bundle.recommend(users, k, model="als")
        want = als.recommend(users, k)
        assert not bundle._models
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.scores, want.scores)
    for u in users[:20]:
        one = Bundle.open(version, lazy=True).recommend([u], 10, model="als")
        np.testing.assert_array_equal(one.indices, als.recommend([u], 10).indices)
    # Anything but the defaults is the model's: filters, new history, seen items kept.
    bundle = Bundle.open(version, lazy=True)
    bundle.recommend(users[:3], 5, model="als", exclude_seen=False)
    assert "als" in bundle._models


def test_stored_rankings_answer_as_their_models_do(
    planted_data: InteractionData, tmp_path: Path
) -> None:
    """A model's precomputed ranking answers from the bundle, the model unbuilt, as it would."""
    from hybridrec.models import create_model

    models = {
        "als": create_model("als", {"factors": 8, "iterations": 5}).fit(planted_data),
        "ease": create_model("ease").fit(planted_data),
    }
    for model in models.values():
        assert model.precompute_ranking(6, 1 << 30)
    version = save(tmp_path, models, None)
    users = planted_data.users.ids
    for name, model in models.items():
        for k in (1, 6):
            bundle = Bundle.open(version, lazy=True)
            got = bundle.recommend(users, k, model=name)
            want = model.recommend(users, k)
            np.testing.assert_array_equal(got.indices, want.indices)
            np.testing.assert_array_equal(got.scores, want.scores)
            assert name not in bundle._models, (name, k)
        # Beyond the stored rankings the model answers (and is built for it).
        bundle = Bundle.open(version, lazy=True)
        got = bundle.recommend(users[:4], 9, model=name)
        np.testing.assert_array_equal(got.indices, model.recommend(users[:4], 9).indices)
        assert name in bundle._models


def test_a_factor_answer_imports_no_model_code(
    components: dict[str, Recommender], planted_data: InteractionData, tmp_path: Path
) -> None:
    import subprocess
    import sys

    version = save(tmp_path, components, None)
    user = planted_data.users.ids[3].item()
    code = f"""
import sys
from hybridrec.bundle import open_bundle
b = open_bundle({str(version.parent)!r}, {version.name!r})
print(b.recommend([{user!r}], 10, model="als").indices[0].tolist())
print(sorted(m for m in ("scipy", "pydantic", "joblib", "implicit", "hybridrec.models.als",
                         "hybridrec.models.base", "polars") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    answer, imported = out.stdout.strip().splitlines()
    assert answer == str(components["als"].recommend([user], 10).indices[0].tolist())
    assert imported == "[]"


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
