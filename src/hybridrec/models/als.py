"""Implicit-feedback ALS (Hu, Koren & Volinsky) through the `implicit` library."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, model_validator
from threadpoolctl import threadpool_limits

from hybridrec.data.dataset import InteractionData
from hybridrec.data.matrix import Weighter, Weighting
from hybridrec.errors import ConfigError, DataError
from hybridrec.models.base import ModelConfig, Recommender
from hybridrec.models.footprint import DENSE_FLOPS, DataShape, Footprint
from hybridrec.models.registry import register

__all__ = ["ALS", "ALSConfig", "cuda_available"]

log = logging.getLogger(__name__)

# Guards rebuilding a loaded model's solver (requests fold users in from several threads).
_SOLVER_LOCK = threading.Lock()


class ALSConfig(ModelConfig):
    """Hyperparameters of `ALS`.

    The same values mean the same model on both backends: with ``backend = "spark"``, Spark
    is given ``rating = alpha · weight - 1`` and ``alpha = 1`` (its confidence 1 + rating
    is then implicit's alpha · weight) and ``regParam = regularization · Σn / Σn²`` over
    the users' and items' interaction counts n (Spark scales regParam by each row's count,
    ALS-WR; this makes the scaled penalty equal ``regularization`` for the row an average
    interaction sits in). See `hybridrec.models.spark_als`.
    """

    #: Latent dimensions.
    factors: int = Field(default=64, gt=0)
    #: L2 regularization of user and item factors.
    regularization: float = Field(default=1.0, ge=0)
    #: Confidence of an observed (user, item): alpha · weight; unobserved cells have 1
    #: (implicit's convention; the paper's 1 + alpha · w is ``weighting = "confidence"``
    #: with alpha = 1 here).
    alpha: float = Field(default=1.0, gt=0)
    #: Training sweeps (each solves users, then items).
    iterations: int = Field(default=15, gt=0)
    #: Input weighting before confidence scaling (``bm25`` often helps on skewed data).
    weighting: Weighting = "none"
    #: BM25 saturation (``bm25`` weighting only).
    bm25_k1: float = Field(default=100.0, gt=0)
    #: BM25 length normalization (``bm25`` weighting only).
    bm25_b: float = Field(default=0.8, ge=0, le=1)
    #: Train on a CUDA GPU: None picks it when implicit was built with CUDA and one is present.
    use_gpu: bool | None = None
    #: Seed of the factor initialization.
    random_state: int = 42
    #: CPU threads for implicit (0: all cores).
    num_threads: int = Field(default=0, ge=0)
    #: Who trains: ``implicit`` (this process) or ``spark`` (``pyspark.ml`` ALS, on the
    #: Spark master below; needs the ``spark`` extra and Java 17). Both give the same
    #: bundle: serving and fold-in cannot tell them apart.
    backend: Literal["implicit", "spark"] = "implicit"
    #: Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``, ...); unset: the
    #: ``SPARK_MASTER`` environment variable, else ``local[*]``. Spark backend only.
    master: str | None = None
    #: Spark ALS checkpoints its factors every this many iterations (cuts the lineage
    #: of long runs). Spark backend only.
    checkpoint_interval: int = Field(default=10, ge=1)
    #: Checkpoint folder (HDFS / S3 URL on a cluster); unset: a temporary folder on a
    #: ``local`` master, no checkpoints on a cluster. Spark backend only.
    checkpoint_dir: str | None = None
    #: Spark's coldStartStrategy (``drop`` / ``nan``): what Spark's own ``transform`` does
    #: with ids it never saw. The factors imported are the same either way. Spark only.
    cold_start_strategy: Literal["drop", "nan"] = "drop"
    #: ``spark.driver.memory`` (e.g. ``"4g"``) of a session this model starts (a running
    #: session is reused as it is). Spark backend only.
    driver_memory: str | None = None
    #: Folder for the Parquet exchanged with Spark (the cells in, the factors out);
    #: unset: the system temp folder. On a cluster it must be a path the driver and every
    #: executor see (a shared mount). Spark backend only.
    work_dir: str | None = None

    @model_validator(mode="after")
    def _backend_settings(self) -> ALSConfig:
        if self.backend == "spark" and self.use_gpu:
            raise ValueError("use_gpu = true trains with implicit; backend = 'spark' has no GPU")
        if self.backend == "implicit":
            spark_only = [
                key
                for key in ("master", "checkpoint_dir", "driver_memory", "work_dir")
                if getattr(self, key) is not None
            ]
            if spark_only:
                raise ValueError(f"{', '.join(spark_only)}: Spark settings need backend = 'spark'")
        return self


def cuda_available() -> bool:
    """Whether implicit can train on a GPU here."""
    try:
        import implicit.gpu

        return bool(implicit.gpu.HAS_CUDA)
    except ImportError:  # pragma: no cover - implicit is a core dependency
        return False


@register
class ALS(Recommender):
    """Matrix factorization for implicit feedback; scores = user factors · item factors.

    A user unknown to the model, or one with history added since training, is folded in:
    their factors are solved in closed form against the fixed item factors (implicit's
    ``recalculate_user``), the same least-squares step training uses.
    """

    name = "als"
    Config = ALSConfig
    represents_users = True
    dot_state = ("user_factors", "item_factors")
    ranks_whole_catalog = True
    config: ALSConfig

    @classmethod
    def footprint(cls, config: ModelConfig, shape: DataShape) -> Footprint:
        """Factors (users and items, with implicit's working copies) and the matrix twice."""
        assert isinstance(config, ALSConfig)
        f = config.factors
        rows = shape.users + shape.items
        if config.backend == "spark":
            # Spark solves elsewhere (its executors); here: the cells out, the factors back.
            return Footprint(
                bytes=rows * f * 4 * 2 + shape.nnz * 12 * 2,
                seconds=config.iterations * (shape.nnz * f * 6) / DENSE_FLOPS * 4 + 10,
            )
        work = shape.nnz * f * 6 + rows * f * f * 2
        return Footprint(
            bytes=rows * f * 4 * 3 + shape.nnz * 12 * 3,
            seconds=config.iterations * work / DENSE_FLOPS * 4,
        )

    def _make_weighter(self) -> Weighter:
        c = self.config
        return Weighter(c.weighting, bm25_k1=c.bm25_k1, bm25_b=c.bm25_b)

    def _solver_params(self) -> dict[str, Any]:
        """The config as implicit's `AlternatingLeastSquares` arguments (all but use_gpu)."""
        c = self.config
        return {
            "factors": c.factors,
            "regularization": c.regularization,
            "alpha": c.alpha,
            "iterations": c.iterations,
            "random_state": c.random_state,
            "num_threads": c.num_threads,
        }

    def _fit(self, data: InteractionData) -> None:
        c = self.config
        if c.backend == "spark":
            self._fit_spark(data)
            return
        from implicit.als import AlternatingLeastSquares
        from implicit.recommender_base import ModelFitError

        if c.use_gpu and not cuda_available():
            raise ConfigError(
                "als: use_gpu = true, but implicit has no usable CUDA GPU here; "
                "set use_gpu = false, or leave it unset to pick the GPU only when present"
            )
        use_gpu = cuda_available() if c.use_gpu is None else c.use_gpu
        self.weighter_ = self._make_weighter().fit(data.matrix)
        x = self.weighter_.transform(data.matrix)
        # implicit's own threads do the work; a threaded BLAS underneath only contends (and
        # implicit warns about it when the model is built).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(use_gpu=use_gpu, **self._solver_params())
            try:
                model.fit(x, show_progress=False)
            except ModelFitError as exc:
                # Weights so large (or so spread) that float32 overflows in the solver.
                top = float(x.data.max()) if x.nnz else 0.0
                raise DataError(
                    f"als: training diverged ({exc}); the largest confidence weight is "
                    f"{top:.4g}: scale the weights down or use implicit = 'confidence'"
                ) from None
        if use_gpu:
            model = model.to_cpu()
        self.model_ = model
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self.trained_on_gpu_ = bool(use_gpu)

    def _fit_spark(self, data: InteractionData) -> None:
        """Factors from Spark's ALS; fold-in uses implicit's solver around them, as on load."""
        from hybridrec.models.spark_als import train_factors

        self.weighter_ = self._make_weighter().fit(data.matrix)
        x = self.weighter_.transform(data.matrix)
        self.user_factors_, self.item_factors_ = train_factors(sp.csr_matrix(x), self.config)
        self.trained_on_gpu_ = False
        self.model_ = None

    def fold_in(self, history: sp.csr_matrix) -> NDArray[np.float32]:
        """Solve user factors for history rows (n × items) against the item factors."""
        x = self.weighter_.transform(history)
        with threadpool_limits(1, "blas"):
            factors = self._solver().recalculate_user(np.arange(x.shape[0]), x)
        return np.asarray(factors, dtype=np.float32)

    def _solver(self) -> Any:
        """The implicit model: the fitted one, or after loading a CPU one built on first use.

        A loaded model answers its known users from the saved factors alone, so implicit is
        imported only when a user is folded in.
        """
        if self.model_ is None:
            with _SOLVER_LOCK:
                if self.model_ is None:
                    self.model_ = self._cpu_solver()
        return self.model_

    def _cpu_solver(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(**self._solver_params())
        # Fold-in only needs the item side. implicit's solver wants writable float32
        # buffers, and the saved factors may be read-only memory maps (or float64 imports):
        # a private copy of the (small) item factors, never of the user factors.
        model.user_factors = self.user_factors_
        model.item_factors = np.array(self.item_factors_, dtype=np.float32, copy=True)
        return model

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        factors = self.user_factors_[np.maximum(users, 0)].copy()
        if fold_in.any():
            factors[fold_in] = self.fold_in(history[np.flatnonzero(fold_in)])
        scores: NDArray[np.float32] = factors @ self.item_factors_.T
        return scores

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        v = self.item_factors_
        norms = np.linalg.norm(v, axis=1)
        norms[norms == 0] = 1.0
        unit = (v / norms[:, None]).astype(np.float32)
        sims: NDArray[np.float32] = unit[items] @ unit.T
        return sims

    def _state(self) -> dict[str, Any]:
        return {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "weighter": self.weighter_,
            "trained_on_gpu": self.trained_on_gpu_,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.user_factors_ = state["user_factors"]
        self.item_factors_ = state["item_factors"]
        self.weighter_ = state["weighter"]
        self.trained_on_gpu_ = state["trained_on_gpu"]
        # implicit's solver, for fold-in, is rebuilt around these factors on first use.
        self.model_ = None
