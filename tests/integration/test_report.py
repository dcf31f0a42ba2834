"""``hybridrec report``: a trained version's page, rendered by headless Chromium offline.

One tracked ``train`` of a small pipeline on synthetic ratings (its MLflow store in the temp
folder) feeds every test: the page of the version, the page of the MLflow run, the page the
run carries as an artifact, and the one-line errors. Chromium renders the page with the
network cut off and takes a screenshot. Without Chromium the screenshot test skips with a
reason locally and fails under CI (``make test`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import _ci, assert_error, assert_ok, invoke, synthetic_ratings, write_table

from hybridrec.bundle import ModelStore

CONFIG = """
[models.popularity]

[models.als]
factors = 16
iterations = 5
random_state = 1
num_threads = 1

[models.itemknn]
neighbors = 20
"""
WINDOW = (1280, 2000)


@dataclass
class Trained:
    """A store whose current version was trained with evaluation, and its MLflow run."""

    root: Path
    model_dir: Path
    version: str
    uri: str

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def run_id(self) -> str:
        client = self.client()
        experiment = client.get_experiment_by_name("hybridrec")
        (run,) = client.search_runs(
            [experiment.experiment_id], f"tags.bundle_version = '{self.version}'"
        )
        return str(run.info.run_id)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("report")
    ratings, _ = synthetic_ratings()
    write_table(ratings, root / "train.csv")
    (root / "cfg.toml").write_text(CONFIG, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDREC_TRACKING", "true")
        mp.setenv("HYBRIDREC_DATA_DIR", str(root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        model_dir = root / "models"
        ran = invoke(
            "train", "--config", root / "cfg.toml", "--train", root / "train.csv",
            "--model-dir", model_dir,
        )  # fmt: skip
        assert_ok(ran)
        assert "MLflow: train run" in ran.stderr, ran.stderr
        version = ModelStore(model_dir).versions()[-1]
        uri = f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}"
        yield Trained(root, model_dir, version, uri)


def _page(trained: Trained, *args: str | Path, name: str = "report.html") -> str:
    output = trained.root / name
    ran = invoke("report", "--model-dir", trained.model_dir, "--output", output, *args)
    assert_ok(ran)
    assert f"wrote {output}" in ran.stdout.replace("\n", "")
    return output.read_text(encoding="utf-8")


def _assert_offline(page: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()


# ---- Chromium ------------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _no_network_prefix() -> list[str]:
    """``unshare --net`` (an empty network namespace) where this process may use one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, check=False)
    return [unshare, "--net"] if probe.returncode == 0 else []


def screenshot(page: Path, png: Path, size: tuple[int, int] = WINDOW) -> list[str]:
    """Render ``page`` in headless Chromium with networking off; returns the command.

    The network is cut twice: Chromium runs in a network namespace with no interface when
    the process may make one, and in any case every host name resolves to nothing and every
    request goes to a proxy on a closed port, so a page that needed anything from outside
    would render without it.
    """
    browser = _chromium()
    if browser is None:
        reason = "chromium is not installed (make test installs it: apt-get install chromium)"
        if _ci():
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    profile = png.parent / f"{png.stem}-profile"
    command = [
        *_no_network_prefix(),
        browser,
        "--headless",
        "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and png.is_file(), f"{command}\n{proc.stdout}\n{proc.stderr}"
    return command


def test_the_report_renders_in_headless_chromium_without_network(trained: Trained) -> None:
    from PIL import Image

    page = _page(trained)
    _assert_offline(page)
    png = trained.root / "report.png"
    command = screenshot(trained.root / "report.html", png)
    assert "--proxy-server=http://127.0.0.1:9" in command
    assert png.stat().st_size > 50_000  # a page of tables and charts, not a blank one
    with Image.open(png) as image:
        assert image.size == WINDOW
        rgb = image.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colors) > 200, f"only {len(colors)} colors"
        # Most of the page is white paper, but far from all of it.
        white = next((n for n, c in colors if c == (255, 255, 255)), 0)
        assert 0.3 < white / (WINDOW[0] * WINDOW[1]) < 0.97
        # The embedded charts were decoded and drawn: matplotlib's first two bar colors
        # (#1f77b4 blue, #ff7f0e orange) cover real areas of the screenshot.
        for bar in ((31, 119, 180), (255, 127, 14)):
            count = next((n for n, c in colors if c == bar), 0)
            assert count > 2000, f"{bar}: {count} pixels"


def test_the_version_page_holds_the_stored_evaluation(trained: Trained) -> None:
    page = _page(trained, "--version", trained.version, name="version.html")
    _assert_offline(page)
    manifest = ModelStore(trained.model_dir).manifest(trained.version)
    als = manifest["metrics"]["als"]
    for key in ("ndcg@10", "recall@20", "precision@10"):
        assert f"{als[key]:.4f}" in page, key
    assert f"version {trained.version}" in page
    assert "<h2>Versions</h2>" in page and "<h2>Metrics against K</h2>" in page
    assert len(re.findall(r'<img class="chart"[^>]* src="data:image/png;base64,', page)) == 2


def test_the_train_run_carries_the_page_and_report_run_rebuilds_it(trained: Trained) -> None:
    run_id = trained.run_id()
    client = trained.client()
    assert "report.html" in {a.path for a in client.list_artifacts(run_id)}
    stored = Path(client.download_artifacts(run_id, "report.html", str(trained.root)))
    stored_page = stored.read_text(encoding="utf-8")
    assert f"version {trained.version}" in stored_page
    _assert_offline(stored_page)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDREC_DATA_DIR", str(trained.root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        page = _page(trained, "--run", run_id, name="run.html")
    _assert_offline(page)
    assert run_id in page and f"train run of version {trained.version}" in page
    als = ModelStore(trained.model_dir).manifest(trained.version)["metrics"]["als"]
    assert f"{als['ndcg@10']:.4f}" in page


def test_unknown_versions_runs_and_missing_evaluations_are_one_line_errors(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    base = ("report", "--model-dir", trained.model_dir, "--output", out)
    assert_error(invoke(*base, "--version", "nope"), r"no version 'nope'")
    assert_error(invoke(*base, "--version", trained.version, "--run", "x"), "not both")
    assert_error(
        invoke("report", "--model-dir", trained.model_dir, "--output", tmp_path / "r.txt"),
        r"ending in \.html",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDREC_DATA_DIR", str(trained.root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert_error(invoke(*base, "--run", "0123deadbeef"), r"no MLflow run '0123deadbeef'")
        mp.setenv("HYBRIDREC_DATA_DIR", str(tmp_path / "nothing"))
        assert_error(invoke(*base, "--run", "0123deadbeef"), r"no MLflow store at sqlite")
    assert not (tmp_path / "nothing").exists()  # looking did not create a store
    # A version trained without evaluation has nothing to report.
    store = tmp_path / "models"
    shutil.copytree(trained.model_dir, store)
    assert_ok(
        invoke(
            "train", "--config", trained.root / "cfg.toml", "--train",
            trained.root / "train.csv", "--model-dir", store, "--no-evaluate",
        )
    )  # fmt: skip
    assert_error(invoke("report", "--model-dir", store, "--output", out), r"has no evaluation")
    assert not out.exists()
