"""Image embeddings with a CLIP model through sentence-transformers.

Catalog rows name image files (a path, relative to an image root or absolute, or a
``file://`` URL). Images that are missing or unreadable are counted and skipped with one
warning for the whole call, never an error: those items fall back to their text embedding.
Vectors are cached by the hash of the image bytes, so a retrain re-encodes only new or
changed images.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from numpy.typing import NDArray

from hybridrec.embed.cache import EmbeddingCache, content_key
from hybridrec.embed.text import SentenceModelEncoder, l2_normalize, model_fingerprint

__all__ = ["ClipImageEncoder", "ImageEncoding", "resolve_image_path"]


@dataclass(frozen=True)
class ImageEncoding:
    """The result of encoding a column of image references.

    Attributes:
        vectors: One L2-normalized float32 row per reference; zeros where ``ok`` is False.
        ok: Which rows have an image embedding.
        n_missing: References given but missing or unreadable (skipped).
        n_empty: Rows with no image reference at all (null or empty).
    """

    vectors: NDArray[np.float32]
    ok: NDArray[np.bool_]
    n_missing: int
    n_empty: int


def resolve_image_path(ref: str, root: str | Path | None = None) -> Path | None:
    """The file an image reference points to, or None for references we cannot read.

    ``file://`` URLs and plain paths are accepted (relative paths against ``root``); network
    URLs are not fetched.
    """
    ref = ref.strip()
    if not ref:
        return None
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        return None  # http(s), s3, ...: not on disk
    path = Path(ref).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root).expanduser() / path
    return path


class ClipImageEncoder(SentenceModelEncoder):
    """Encode images with a CLIP model loaded by sentence-transformers.

    Args:
        model: Local folder or name of a sentence-transformers CLIP model.
        batch_size: Images per forward pass.
        device: Torch device (default ``"cpu"``).
        cache_dir: Embedding cache root (default `default_cache_dir`).
        use_cache: Whether to read and write the cache.
        show_progress: Show a progress bar while encoding.
    """

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
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

    @property
    def fingerprint(self) -> str:
        """Identity of the model for the cache."""
        if self._fingerprint is None:
            path = Path(self.model).expanduser()
            resolved = str(path.resolve()) if path.exists() else self.model
            self._fingerprint = model_fingerprint("image", resolved)
        return self._fingerprint

    def encode_text(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Encode texts with the CLIP text tower (the same space as the images)."""
        return l2_normalize(self._encode_model(list(texts), progress=False))

    def encode(
        self, refs: Sequence[str | None], *, root: str | Path | None = None
    ) -> ImageEncoding:
        """Encode the images ``refs`` point to; missing or unreadable ones are skipped.

        Args:
            refs: One image reference per item (path, ``file://`` URL, or None).
            root: Folder that relative paths are resolved against.
        """
        from PIL import Image, UnidentifiedImageError

        n = len(refs)
        ok = np.zeros(n, dtype=bool)
        keys: list[bytes | None] = [None] * n
        blobs: dict[int, bytes] = {}
        n_empty = 0
        problems: list[str] = []
        for i, ref in enumerate(refs):
            path = resolve_image_path(ref, root) if ref else None
            if path is None:
                if ref and ref.strip():
                    problems.append(f"{ref}: not a file path")
                else:
                    n_empty += 1
                continue
            try:
                blob = path.read_bytes()
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or type(exc).__name__}")
                continue
            blobs[i] = blob
            keys[i] = content_key(self.fingerprint, blob)
        cache = EmbeddingCache(self.cache_dir, self.fingerprint) if self.use_cache else None
        dim: int | None = None
        vectors: dict[int, NDArray[np.float32]] = {}
        todo = list(blobs)
        if cache is not None and todo:
            found, cached = cache.get([keys[i] for i in todo if keys[i] is not None])  # type: ignore[misc]
            if cached is not None:
                dim = cached.shape[1]
                for j, i in enumerate(todo):
                    if found[j]:
                        vectors[i] = cached[j]
            todo = [i for j, i in enumerate(todo) if not found[j]]
        images: list[Any] = []
        decoded: list[int] = []
        for i in todo:
            try:
                with Image.open(io.BytesIO(blobs[i])) as img:
                    images.append(img.convert("RGB"))
                decoded.append(i)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                problems.append(f"{refs[i]}: unreadable image ({type(exc).__name__})")
        self.last_encoded = len(decoded)
        if images:
            new = l2_normalize(self._encode_model(images, progress=self.show_progress))
            dim = new.shape[1]
            for j, i in enumerate(decoded):
                vectors[i] = new[j]
            if cache is not None:
                cache.put([keys[i] for i in decoded if keys[i] is not None], new)  # type: ignore[misc]
        if problems:
            warnings.warn(
                f"{len(problems)} of {n} images missing or unreadable, skipped "
                f"(those items keep their text embedding); first: {problems[0]}",
                UserWarning,
                stacklevel=2,
            )
        if dim is None:
            return ImageEncoding(np.zeros((n, 0), np.float32), ok, len(problems), n_empty)
        mat = np.zeros((n, dim), dtype=np.float32)
        for i, v in vectors.items():
            mat[i] = v
            ok[i] = True
        return ImageEncoding(mat, ok, len(problems), n_empty)
