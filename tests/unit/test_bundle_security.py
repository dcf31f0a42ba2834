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
