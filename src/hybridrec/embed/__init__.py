"""Item embeddings: text encoders (TF-IDF, sentence-transformers), CLIP images, fusion, cache.

Nothing here imports torch at import time; the TF-IDF encoder never needs it.
"""

from hybridrec.embed.cache import CACHE_DIR_ENV, EmbeddingCache, content_key, default_cache_dir
from hybridrec.embed.fusion import fuse
from hybridrec.embed.image import ClipImageEncoder, ImageEncoding, resolve_image_path
from hybridrec.embed.text import (
    DEFAULT_SENTENCE_MODEL,
    DEFAULT_TEXT_FIELDS,
    SentenceTextEncoder,
    TextEncoder,
    TfidfTextEncoder,
    item_texts,
    l2_normalize,
    load_sentence_model,
    resolve_sentence_model,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_SENTENCE_MODEL",
    "DEFAULT_TEXT_FIELDS",
    "ClipImageEncoder",
    "EmbeddingCache",
    "ImageEncoding",
    "SentenceTextEncoder",
    "TextEncoder",
    "TfidfTextEncoder",
    "content_key",
    "default_cache_dir",
    "fuse",
    "item_texts",
    "l2_normalize",
    "load_sentence_model",
    "resolve_image_path",
    "resolve_sentence_model",
]
