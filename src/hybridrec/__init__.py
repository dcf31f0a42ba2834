"""hybridrec: a hybrid recommender system — ingest, train, blend, evaluate, serve."""

__version__ = "0.1.0"
__all__ = ["__version__"]
