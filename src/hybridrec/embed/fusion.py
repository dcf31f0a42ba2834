"""Fusing text and image embeddings into one item vector."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hybridrec.embed.text import l2_normalize
from hybridrec.errors import ConfigError

__all__ = ["fuse"]


def fuse(
    text: NDArray[np.float32] | None,
    image: NDArray[np.float32] | None,
    *,
    image_weight: float = 0.5,
) -> NDArray[np.float32]:
    """One L2-normalized row per item from its text and/or image embedding.

    Items with both get a weighted combination; items with only one keep it; items with
    neither stay a zero row. When both spaces have the same dimension (e.g. CLIP's text and
    image towers) the combination is ``(1 - w)·t + w·i``; otherwise the two are concatenated
    as ``[√(1 - w)·t, √w·i]``, so the inner product of two such items is
    ``(1 - w)·t·t' + w·i·i'``, and an item with one part keeps it (zeros in the other block).

    Args:
        text: Text rows (n × d_t), zero rows for items without text; or None.
        image: Image rows (n × d_i), zero rows for items without an image; or None.
        image_weight: ``w``, the image share in [0, 1].

    Raises:
        ConfigError: ``image_weight`` is outside [0, 1] or the row counts differ.
    """
    if not 0.0 <= image_weight <= 1.0:
        raise ConfigError(f"image_weight must be in [0, 1] (got {image_weight})")
    if text is None or text.shape[1] == 0:
        if image is None:
            raise ConfigError("nothing to fuse: neither text nor image embeddings")
        return l2_normalize(image)
    if image is None or image.shape[1] == 0:
        return l2_normalize(text)
    if text.shape[0] != image.shape[0]:
        raise ConfigError(f"text has {text.shape[0]} rows but image has {image.shape[0]}")
    t, i = l2_normalize(text), l2_normalize(image)
    has_t = np.linalg.norm(t, axis=1) > 0
    has_i = np.linalg.norm(i, axis=1) > 0
    both = (has_t & has_i)[:, None]
    w = np.float32(image_weight)
    if t.shape[1] == i.shape[1]:
        mixed = np.where(both, (1 - w) * t + w * i, t + i)
        return l2_normalize(mixed)
    tw = np.where(both, np.sqrt(1 - w), 1.0).astype(np.float32)
    iw = np.where(both, np.sqrt(w), 1.0).astype(np.float32)
    return l2_normalize(np.hstack([tw * t, iw * i]))
