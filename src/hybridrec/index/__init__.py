"""Vector search: a FAISS wrapper (exact, IVF, HNSW) that persists with FAISS's own format."""

from hybridrec.index.faiss_index import IndexKind, IndexParams, VectorIndex, recall_of

__all__ = ["IndexKind", "IndexParams", "VectorIndex", "recall_of"]
