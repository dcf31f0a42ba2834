"""Encoders, item text, fusion and the embedding cache (`hybridrec.embed`)."""

from __future__ import annotations

import os
import string
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.embed import (
    ClipImageEncoder,
    EmbeddingCache,
    SentenceTextEncoder,
    TfidfTextEncoder,
    content_key,
    fuse,
    item_texts,
    l2_normalize,
    resolve_sentence_model,
)
from hybridrec.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[2]


# ---- item text --------------------------------------------------------------------------------


def test_item_texts_joins_fields_and_skips_empty_values():
    items = pl.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["Toy Story", None, "  "],
            "categories": [["Animation", "Comedy"], [], None],
            "tags": ["pixar", "", "dark"],
        }
    )
    assert item_texts(items) == ["Toy Story. Animation, Comedy. pixar", "", "dark"]
    assert item_texts(items, ["tags", "title"]) == ["pixar. Toy Story", "", "dark"]


def test_item_texts_missing_column_is_named():
    items = pl.DataFrame({"item_id": [1], "title": ["x"]})
    with pytest.raises(DataError, match="'plot'"):
        item_texts(items, ["title", "plot"])
    with pytest.raises(DataError, match="no text column"):
        item_texts(pl.DataFrame({"item_id": [1], "price": [3.0]}))


# ---- TF-IDF -----------------------------------------------------------------------------------

CORPUS = [
    "space rocket alien galaxy",
    "alien invasion of the galaxy",
    "romantic comedy wedding love",
    "love story and a wedding",
    "haunted house ghost horror",
    "ghost horror in the night",
]


def test_tfidf_rows_are_unit_and_similar_texts_are_closest():
    enc = TfidfTextEncoder(dim=None).fit(CORPUS)
    x = enc.encode(CORPUS)
    assert x.dtype == np.float32 and x.shape == (6, enc.output_dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    assert sims.argmax(axis=1).tolist() == [1, 0, 3, 2, 5, 4]
    # Only unknown words or stop words: a zero row (no content), never NaN.
    z = enc.encode(["zzz qqq", "the and of"])
    assert np.all(z == 0)


def test_tfidf_svd_reduces_and_state_round_trips():
    texts = [f"{w} {w}{i} common{i % 3}" for i, w in enumerate(string.ascii_lowercase)]
    enc = TfidfTextEncoder(dim=8, stop_words=None).fit(texts)
    assert enc.components_ is not None and enc.output_dim == 8
    x = enc.encode(texts)
    assert x.shape == (26, 8)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    again = TfidfTextEncoder.from_state(enc.get_state()).encode(texts)
    np.testing.assert_array_equal(again, x)


def test_tfidf_fit_cached_reuses_a_fit_of_the_same_texts_and_settings(monkeypatch):
    texts = [f"{w} {w}{i} common{i % 3}" for i, w in enumerate(string.ascii_lowercase)]
    fits: list[int] = []
    real_fit = TfidfTextEncoder.fit

    def counted(self: TfidfTextEncoder, batch: list[str]) -> TfidfTextEncoder:
        fits.append(len(batch))
        return real_fit(self, batch)

    monkeypatch.setattr(TfidfTextEncoder, "fit", counted)
    first = TfidfTextEncoder(dim=8, stop_words=None).fit_cached(texts)
    second = TfidfTextEncoder(dim=8, stop_words=None).fit_cached(texts)
    assert fits == [26]  # the second one reused the first fit
    assert second.components_ is first.components_
    np.testing.assert_array_equal(
        second.encode(texts),
        real_fit(TfidfTextEncoder(dim=8, stop_words=None), texts).encode(texts),
    )
    assert first.idf_ is not None and not first.idf_.flags.writeable  # shared: read-only
    TfidfTextEncoder(dim=4, stop_words=None).fit_cached(texts)  # other settings
    TfidfTextEncoder(dim=8, stop_words=None).fit_cached([*texts[:-1], "zeta"])  # other texts
    assert fits == [26, 26, 26]


def test_tfidf_errors():
    with pytest.raises(ConfigError, match="not fitted"):
        TfidfTextEncoder().encode(["x"])
    with pytest.raises(DataError, match="no usable words"):
        TfidfTextEncoder().fit(["the", "and"])


# ---- fusion -----------------------------------------------------------------------------------


def test_fuse_same_dimension_weighted_sum_and_single_parts_kept():
    t = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32)
    i = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32)
    out = fuse(t, i, image_weight=0.25)
    np.testing.assert_allclose(out[0], l2_normalize(np.array([[0.75, 0.25, 0]]))[0], rtol=1e-6)
    np.testing.assert_array_equal(out[1], [0, 1, 0])  # text only keeps its text
    np.testing.assert_array_equal(out[2], [0, 0, 1])  # image only keeps its image


def test_fuse_different_dimensions_concatenates_with_weights():
    t = l2_normalize(np.array([[1, 1], [1, 0]], np.float32))
    i = l2_normalize(np.array([[1, 0, 0], [0, 0, 0]], np.float32))
    out = fuse(t, i, image_weight=0.36)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0, 2:], [0.6, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(out[0, :2], 0.8 * t[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [1, 0, 0, 0, 0], rtol=1e-6)
    with pytest.raises(ConfigError, match="image_weight"):
        fuse(t, i, image_weight=1.5)


# ---- cache ------------------------------------------------------------------------------------


def test_cache_round_trip_isolation_and_compaction(tmp_path: Path):
    cache = EmbeddingCache(tmp_path, "model-a")
    keys = [content_key("model-a", f"text {i}") for i in range(5)]
    vecs = np.arange(15, dtype=np.float32).reshape(5, 3)
    cache.put(keys[:3], vecs[:3])
    found, got = EmbeddingCache(tmp_path, "model-a").get(keys)
    assert found.tolist() == [True, True, True, False, False]
    assert got is not None
    np.testing.assert_array_equal(got[:3], vecs[:3])
    other_found, _ = EmbeddingCache(tmp_path, "model-b").get(keys)
    assert not other_found.any()
    for j in range(20):  # many parts are merged into one
        cache.put([content_key("model-a", f"extra {j}")], vecs[:1])
    assert len(list(cache.directory.glob("part-*.npz"))) <= 16
    found, got = EmbeddingCache(tmp_path, "model-a").get(keys[:3])
    assert found.all() and got is not None
    np.testing.assert_array_equal(got, vecs[:3])
    assert len(EmbeddingCache(tmp_path, "model-a")) == 23
    # Keys are raw bytes: one ending in a zero byte must survive a round trip.
    zero_end = b"\x07" * 31 + b"\x00"
    cache.put([zero_end], vecs[:1])
    assert EmbeddingCache(tmp_path, "model-a").get([zero_end])[0].all()
    # A damaged part costs only its vectors.
    (cache.directory / "part-zzz.npz").write_bytes(b"not a zip")
    assert EmbeddingCache(tmp_path, "model-a").get(keys[:1])[0].all()


# ---- sentence-transformers ----------------------------------------------------------------------


def test_default_model_resolves_to_the_bundled_package():
    path = Path(resolve_sentence_model("all-MiniLM-L6-v2"))
    assert path.is_dir() and (path / "modules.json").is_file()
    assert resolve_sentence_model("sentence-transformers/all-MiniLM-L6-v2") == str(path)


def test_sentence_encoder_caches_by_content(tmp_path: Path):
    texts = ["A space adventure with aliens", "A romantic wedding comedy", ""]
    enc = SentenceTextEncoder(cache_dir=tmp_path, show_progress=False)
    x = enc.encode(texts)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:2], axis=1), 1.0, rtol=1e-5)
    assert np.all(x[2] == 0)  # no text, no content
    assert enc.last_encoded == 2
    # A fresh encoder with a warm cache never loads the model.
    again = SentenceTextEncoder(cache_dir=tmp_path, show_progress=False)
    np.testing.assert_allclose(again.encode(texts), x, atol=1e-6)
    assert again.last_encoded == 0 and again._model is None
    # Only the changed text is re-encoded.
    changed = SentenceTextEncoder(cache_dir=tmp_path, show_progress=False)
    changed.encode([texts[0], "A haunted house horror story"])
    assert changed.last_encoded == 1


def test_sentence_encoder_bad_model_is_config_error(tmp_path: Path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    enc = SentenceTextEncoder(str(empty), use_cache=False, show_progress=False)
    with pytest.raises(ConfigError, match="cannot load sentence-transformers model"):
        enc.encode(["x"])


# ---- CLIP images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP model with random weights and a character-level tokenizer, saved locally."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    torch.manual_seed(0)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    hf_dir = tmp_path_factory.mktemp("clip-hf")
    CLIPModel(config).save_pretrained(hf_dir)
    processor = CLIPProcessor(
        image_processor=ImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(hf_dir)
    st_dir = tmp_path_factory.mktemp("clip-st")
    SentenceTransformer(modules=[Transformer(str(hf_dir))], device="cpu").save(str(st_dir))
    return st_dir


def write_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        pixels = (rng.random((24 + i, 30, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        names.append(f"img{i}.png")
    return names


def test_clip_encoder_skips_missing_and_unreadable_with_one_warning(tiny_clip, tmp_path: Path):
    names = write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    refs: list[str | None] = [
        names[0],
        "missing.png",
        (tmp_path / names[1]).as_uri(),  # file:// URL
        "broken.png",
        None,
        str(tmp_path / names[2]),  # absolute path
        "https://example.com/x.png",  # not on disk: skipped
    ]
    enc = ClipImageEncoder(str(tiny_clip), cache_dir=tmp_path / "cache", show_progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = enc.encode(refs, root=tmp_path)
    ours = [w for w in caught if "images missing or unreadable" in str(w.message)]
    assert len(ours) == 1 and "3 of 7" in str(ours[0].message)
    assert out.ok.tolist() == [True, False, True, False, False, True, False]
    assert out.n_missing == 3 and out.n_empty == 1
    assert out.vectors.shape == (7, 16)
    np.testing.assert_allclose(np.linalg.norm(out.vectors[out.ok], axis=1), 1.0, rtol=1e-5)
    assert np.all(out.vectors[~out.ok] == 0)
    assert enc.last_encoded == 3
    # Cached by image content: a second pass encodes nothing and gives the same vectors.
    again = ClipImageEncoder(str(tiny_clip), cache_dir=tmp_path / "cache", show_progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out2 = again.encode(refs, root=tmp_path)
    assert again.last_encoded == 0
    np.testing.assert_allclose(out2.vectors, out.vectors, atol=1e-6)


def test_content_model_fuses_clip_images(tiny_clip, tmp_path: Path):
    from hybridrec.data.dataset import InteractionData
    from hybridrec.models import create_model

    names = write_images(tmp_path, 4)
    catalog = pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "title": ["space rocket", "space alien", "love wedding", "love kiss", "ghost"],
            "image": [names[0], names[1], names[2], "gone.png", None],
        }
    )
    df = pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [1, 3, 2],
            "weight": [1.0, 1.0, 1.0],
            "timestamp": [1, 2, 3],
            "event_type": ["interaction"] * 3,
        }
    )
    data = InteractionData.from_frame(df, items_table=catalog)
    model = create_model(
        "content",
        {
            "image_field": "image",
            "image_model": str(tiny_clip),
            "image_root": str(tmp_path),
            "cache_dir": str(tmp_path / "cache"),
            "show_progress": False,
        },
    )
    with pytest.warns(UserWarning, match="1 of 5 images"):
        model.fit(data)
    assert model.encode_stats_["images"] == 3
    assert model.embeddings_ is not None
    text_dim = model.embeddings_.shape[1] - 16
    assert model.image_dim_ == 16 and text_dim > 0
    # Items with an image carry both parts; the one without keeps text only.
    emb = model.embeddings_[model.items_.index([1, 4])]
    assert np.linalg.norm(emb[0, text_dim:]) > 0 and np.linalg.norm(emb[1, text_dim:]) == 0
    items, _ = model.recommend([1], k=3).row(0)
    assert items.size == 3 and not {1, 3} & set(items.tolist())


# ---- no torch ---------------------------------------------------------------------------------


def test_tfidf_path_works_without_torch():
    code = textwrap.dedent(
        """
        import sys

        BLOCKED = ("torch", "sentence_transformers", "transformers")

        class Absent:
            # As if not installed: importing them raises ModuleNotFoundError. (A None in
            # sys.modules would also block them, but trips libraries that probe sys.modules.)
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, Absent())
        import polars as pl
        from hybridrec.data.dataset import InteractionData
        from hybridrec.models import create_model
        from hybridrec.errors import ConfigError

        catalog = pl.DataFrame({
            "item_id": [1, 2, 3, 4, 5, 6],
            "title": ["space rocket", "alien galaxy rocket", "space alien",
                      "love wedding", "wedding kiss", "love kiss"],
        })
        df = pl.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [1, 2, 4, 5]})
        data = InteractionData.from_frame(
            df.with_columns(weight=pl.lit(1.0), timestamp=pl.lit(None, dtype=pl.Int64),
                            event_type=pl.lit("x")),
            items_table=catalog,
        )
        model = create_model("content", {"show_progress": False}).fit(data)
        recs = model.recommend([1, 2], k=1)
        assert recs.row(0)[0].tolist() == [3], recs.row(0)
        assert recs.row(1)[0].tolist() == [6], recs.row(1)
        try:
            create_model("content", {"encoder": "sentence", "cache": False}).fit(data)
        except ConfigError as exc:
            assert "sentence-transformers" in str(exc)
        else:
            raise AssertionError("sentence encoder worked without torch")
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")
