"""Forged bundles: signatures refuse them with a key, and the unpickler never runs them."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest

from hybridrec.bundle import Bundle, ModelStore, write_bundle
from hybridrec.bundle.format import describe_file
from hybridrec.bundle.safety import KEY_ENV, KEY_FILE_ENV, UnsafePickleError, load_pickle
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import IntegrityError
from hybridrec.models import Recommender, create_model


class _Payload:
    """Pickles into a call that creates ``marker``: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def models(planted_data: InteractionData) -> dict[str, Recommender]:
    return {
        "popularity": create_model("popularity").fit(planted_data),
        "als": create_model("als", {"factors": 8, "iterations": 3}).fit(planted_data),
    }


def _save(root: Path, models: dict[str, Recommender]) -> Path:
    store = ModelStore(root)

    def write(path: Path) -> dict[str, Any]:
        return {**write_bundle(path, models), "default_model": "als"}

    return store.root / store.write_version(write)


def _forge(version: Path, marker: Path) -> None:
    """Replace cf.joblib by a payload and recompute the manifest's hashes, as an attacker can."""
    part = version / "cf.joblib"
    part.chmod(0o644)
    part.write_bytes(pickle.dumps({"models": _Payload(marker)}))
    manifest_file = version / "manifest.json"
    manifest_file.chmod(0o644)
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["cf.joblib"] = describe_file(part)
    manifest_file.write_text(json.dumps(manifest, indent=2))


def test_a_forged_part_never_runs_code_without_a_key(
    models: dict[str, Recommender], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    version = _save(tmp_path / "store", models)
    marker = tmp_path / "pwned"
    _forge(version, marker)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        Bundle.open(version)  # hashes match (recomputed): only the unpickler stands in the way
    assert not marker.exists()
    # Sanity: the payload does run through a plain unpickler.
    pickle.loads((version / "cf.joblib").read_bytes())
    assert marker.exists()


def test_with_a_key_versions_are_signed_and_unsigned_or_forged_ones_refused(
    models: dict[str, Recommender], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    unsigned = _save(tmp_path / "store", models)
    monkeypatch.setenv(KEY_ENV, "a secret key")
    signed = _save(tmp_path / "store", models)
    assert (signed / "manifest.sig").is_file()
    assert Bundle.open(signed).model("als") is not None
    with pytest.raises(IntegrityError, match="unsigned version refused"):
        Bundle.open(unsigned)
    marker = tmp_path / "pwned"
    _forge(signed, marker)  # recomputed hashes, old signature
    with pytest.raises(IntegrityError, match="signature does not match"):
        Bundle.open(signed)
    assert not marker.exists()
    # Signed with another key: refused too.
    key_file = tmp_path / "other.key"
    key_file.write_text("another key\n")
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))
    other = _save(tmp_path / "store", models)
    monkeypatch.setenv(KEY_ENV, "a secret key")  # the text key wins over the file
    with pytest.raises(IntegrityError, match="signature does not match"):
        Bundle.open(other)


def test_version_files_are_read_only_and_pruning_still_works(
    models: dict[str, Recommender], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    root = tmp_path / "store"
    versions = [_save(root, models) for _ in range(3)]
    for file in versions[-1].iterdir():
        assert not file.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), file
    removed = ModelStore(root).prune(1)
    assert removed and not versions[0].exists()


def test_load_pickle_allows_what_bundles_hold(tmp_path: Path) -> None:
    import joblib
    import numpy as np
    import scipy.sparse as sp

    obj = {"a": np.arange(5), "m": sp.random(4, 4, density=0.5, format="csr"), "s": {1, 2}}
    joblib.dump(obj, tmp_path / "ok.joblib")
    back = load_pickle(tmp_path / "ok.joblib", mmap=True)
    assert back["a"].tolist() == [0, 1, 2, 3, 4] and back["s"] == {1, 2}
    joblib.dump({"f": os.getcwd}, tmp_path / "bad.joblib")
    with pytest.raises(UnsafePickleError, match="getcwd"):
        load_pickle(tmp_path / "bad.joblib")


@pytest.mark.parametrize("compress", [0, 3, ("lz4", 3)])
@pytest.mark.parametrize("mmap", [True, False])
def test_load_pickle_reads_what_joblib_reads(tmp_path: Path, compress: Any, mmap: bool) -> None:
    """Every array layout a bundle holds comes back as joblib.load gives it, without joblib."""
    import subprocess
    import sys

    import joblib
    import numpy as np

    rng = np.random.default_rng(0)
    obj = {
        "f64": rng.random((7, 3)),
        "fortran": np.asfortranarray(rng.random((5, 4)).astype(np.float32)),
        "ints": np.arange(11, dtype=np.int64)[::2].copy(),
        "strings": np.array(["a", "bé", "c" * 40]),
        "objects": np.array(["x", 3, None], dtype=object),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5),
        "bigendian": np.arange(4, dtype=">i4"),
        "nested": [np.ones(3, np.int32), (np.full(2, 7, np.uint8),)],
    }
    path = tmp_path / "p.joblib"
    joblib.dump(obj, path, compress=compress)
    back = load_pickle(path, mmap=mmap)
    want = joblib.load(path, mmap_mode="r" if mmap and not compress else None)
    for key in obj:
        got, ref = (back[key], want[key]) if key != "nested" else (back[key][0], want[key][0])
        assert type(got) is np.ndarray, key
        # (joblib swaps a non-native byte order when it reads into memory; this keeps it.)
        assert got.dtype.newbyteorder("=") == ref.dtype.newbyteorder("="), key
        assert got.shape == ref.shape, key
        assert got.flags.f_contiguous == ref.flags.f_contiguous, key
        assert np.array_equal(got, ref), key
    assert np.array_equal(back["nested"][1][0], want["nested"][1][0])
    # Mapped where joblib maps (uncompressed, numeric), read into memory elsewhere.
    assert (back["f64"].base is not None and not back["f64"].flags.writeable) == (
        mmap and not compress
    )
    # The uncompressed read path does not import joblib.
    code = (
        "import sys; from hybridrec.bundle.safety import load_pickle; "
        f"load_pickle({str(path)!r}, mmap=True); print('joblib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if compress else "False")


def test_load_pickle_refuses_a_truncated_array(tmp_path: Path) -> None:
    import joblib
    import numpy as np

    path = tmp_path / "t.joblib"
    joblib.dump({"a": np.arange(100_000, dtype=np.float64)}, path)
    path.write_bytes(path.read_bytes()[:400_000])
    with pytest.raises(IntegrityError, match="truncated"):
        load_pickle(path, mmap=False)


def test_bundle_verify_reports_signatures_and_refuses_unsigned_with_a_key(
    models: dict[str, Recommender], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hybridrec.cli import app

    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(KEY_ENV, "k1")
    root = tmp_path / "store"
    signed = _save(root, models)
    ok = CliRunner().invoke(app, ["bundle", "verify", "--model-dir", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "signed" in ok.stdout and "unsigned" not in ok.stdout
    (signed / "manifest.sig").chmod(0o644)
    (signed / "manifest.sig").unlink()
    bad = CliRunner().invoke(app, ["bundle", "verify", "--model-dir", str(root)])
    assert bad.exit_code == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "unsigned" in lines[0]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"../../etc", b".tmp-1"])
def test_a_corrupt_current_pointer_is_one_line_for_every_command(
    models: dict[str, Recommender], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    from typer.testing import CliRunner

    from hybridrec.cli import app

    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    root = tmp_path / "store"
    _save(root, models)
    (root / "current").write_bytes(content)
    for args in (
        ["recommend", "--model-dir", str(root), "--user", "1"],
        ["bundle", "verify", "--model-dir", str(root)],
        ["bundle", "info", "--model-dir", str(root)],
        ["similar", "--model-dir", str(root), "--item", "1000"],
    ):
        ran = CliRunner().invoke(app, args)
        assert ran.exit_code == 2, (args, ran.output, ran.exception)
        lines = [line for line in ran.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, ran.stderr)
        assert "current" in lines[0] or "not a version name" in lines[0]
