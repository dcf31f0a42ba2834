"""Start-up imports stay lazy: a model's library is imported when that model needs it.

Each check runs in a fresh interpreter (this process has imported everything already) and
reports which heavy modules it ended up with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hybridrec.bundle
import hybridrec.models
from hybridrec.bundle import ModelStore, write_bundle
from hybridrec.models import Recommender
from hybridrec.models import registry as model_registry

# Libraries of particular models (and the model modules that import them).
HEAVY = (
    "implicit",
    "faiss",
    "torch",
    "sklearn",
    "lightgbm",
    "sentence_transformers",
    "transformers",
    "hybridrec.models.content",
    "hybridrec.models.ease",
    "hybridrec.embed",
    "hybridrec.index",
    "mlflow",
    "pyspark",
    "hybridrec.models.spark_als",
)

REPORT = f"""
import json, sys
def loaded():
    return sorted(m for m in {HEAVY!r} if m in sys.modules)
"""


def run(code: str, *args: str) -> Any:
    """Run ``REPORT + code`` in a fresh interpreter; its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, "-c", REPORT + code, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(components: dict[str, Recommender], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose current version holds popularity, ALS and item-kNN (ALS the default)."""
    root = tmp_path_factory.mktemp("lazy") / "models"
    ModelStore(root).write_version(
        lambda path: {**write_bundle(path, components), "default_model": "als"}
    )
    return root


def test_importing_the_bundle_cli_and_serving_code_imports_no_model_library() -> None:
    got = run(
        """
import hybridrec.bundle, hybridrec.models, hybridrec.cli, hybridrec.serving.app
from hybridrec.bundle import Bundle, ModelStore, open_bundle
from hybridrec.models import ALS, Recommender, model_names
model_names()
print(json.dumps(loaded()))
"""
    )
    assert got == []


def test_an_als_bundle_imports_implicit_only_to_fold_a_user_in(store: Path) -> None:
    got = run(
        """
from hybridrec.bundle import open_bundle
bundle = open_bundle(sys.argv[1])
known = bundle.recommend([1, 2], 5, model="als")
similar = bundle.recommend([1], 5, model="itemknn")
answered = loaded()
folded = bundle.recommend(["visitor"], 5, model="als", history={"visitor": [1000, 1003]})
print(json.dumps({
    "answered": answered,
    "after_fold_in": loaded(),
    "known": (known.indices >= 0).all().item(),
    "folded": (folded.indices >= 0).all().item(),
}))
""",
        str(store),
    )
    assert got["answered"] == []
    assert got["after_fold_in"] == ["implicit"]
    assert got["known"] and got["folded"]


def test_serving_an_als_answer_imports_no_model_library(store: Path, tmp_path: Path) -> None:
    got = run(
        """
from hybridrec.config import Settings
from hybridrec.serving.app import create_app
from starlette.testclient import TestClient

settings = Settings(
    model_dir=sys.argv[1], data_dir=sys.argv[2], database_url=f"sqlite:///{sys.argv[2]}/e.db"
)
with TestClient(create_app(settings)) as client:
    body = client.get("/recommend/user/1", params={"strategy": "als", "k": 5}).json()
print(json.dumps({"method": body["method_used"], "n": len(body["items"]), "loaded": loaded()}))
""",
        str(store),
        str(tmp_path),
    )
    assert got == {"method": "als", "n": 5, "loaded": []}


def test_lazy_packages_export_what_they_list() -> None:
    for package in (hybridrec.bundle, hybridrec.models):
        assert sorted(package.__all__) == sorted(n for n in dir(package) if n in package.__all__)
        for name in package.__all__:
            assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = hybridrec.models.nothing


def test_registry_lists_built_ins_by_module_and_resolves_each() -> None:
    names = model_registry.model_names()
    assert set(model_registry._BUILTIN) <= set(names)
    for name, path in model_registry._BUILTIN.items():
        klass = model_registry.get_model_class(name)
        assert klass.name == name
        assert f"{klass.__module__}:{klass.__qualname__}" == path


def test_a_class_cannot_take_a_built_in_name() -> None:
    impostor = type("ALS", (), {"name": "als", "__module__": "elsewhere"})
    with pytest.raises(ValueError, match="already registered"):
        model_registry.register(impostor)


# What a stored row's answer needs: numpy, joblib's unpickler, BLAKE3 and hybridrec's
# bundle code. Model code, scipy (the pickled training matrix stays unbuilt) and pydantic
# (the models' configs) come with the first model built; implicit with the first fold-in.
NOT_FOR_A_STORED_ROW = ("scipy", "pydantic", "polars", "threadpoolctl", "hybridrec.models.base")
NOT_FOR_AN_ALS_ANSWER = (
    "polars",
    "implicit",
    "sklearn",
    "faiss",
    "torch",
    "lightgbm",
    "mlflow",
    "fastapi",
    "hybridrec.data.loaders",
    "hybridrec.models.itemknn",
)


@pytest.fixture(scope="module")
def ranked_store(
    components: dict[str, Recommender], planted_data: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Any, Any]:
    """A store whose ALS has precomputed rows for every other user: (root, row, no row)."""
    from hybridrec.bundle import TopN

    users = planted_data.users
    top = TopN.from_recommendations("als", components["als"].recommend(users.ids[::2], 10), users)
    root = tmp_path_factory.mktemp("ranked") / "models"
    ModelStore(root).write_version(
        lambda path: {**write_bundle(path, components, top_n=top), "default_model": "als"}
    )
    return root, users.ids[0].item(), users.ids[1].item()


def test_stored_rows_and_factors_answer_without_model_code_and_als_imports_what_it_needs(
    ranked_store: tuple[Path, Any, Any],
) -> None:
    root, with_row, without_row = ranked_store
    got = run(
        f"""
from hybridrec.bundle import open_bundle
watched = {NOT_FOR_A_STORED_ROW + NOT_FOR_AN_ALS_ANSWER!r}
def present():
    return sorted(m for m in watched if m in sys.modules)
bundle = open_bundle(sys.argv[1])
row = bundle.recommend([int(sys.argv[2])], 5, model="als")
after_row = present()
factors = bundle.recommend([int(sys.argv[3])], 5, model="als")
after_factors = present()
bundle.model("als")
print(json.dumps({{
    "after_row": after_row,
    "after_factors": after_factors,
    "after_model": present(),
    "row": (row.indices >= 0).all().item(),
    "factors": (factors.indices >= 0).all().item(),
}}))
""",
        str(root),
        str(with_row),
        str(without_row),
    )
    assert got["row"] and got["factors"]
    # A stored row, and a user without one answered from ALS's stored factors, import
    # nothing; building ALS itself needs scipy, pydantic and threadpoolctl, nothing more.
    assert got["after_row"] == got["after_factors"] == []
    assert got["after_model"] == ["hybridrec.models.base", "pydantic", "scipy", "threadpoolctl"]
