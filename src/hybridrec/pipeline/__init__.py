"""Pipelines: offline training and evaluation (retraining arrives with its issue)."""

from hybridrec.pipeline.artifacts import TrainedPipeline, load_pipeline
from hybridrec.pipeline.train import (
    PreparedData,
    TrainResult,
    evaluate_pipeline,
    prepare_data,
    split_data,
    train_pipeline,
)

__all__ = [
    "PreparedData",
    "TrainResult",
    "TrainedPipeline",
    "evaluate_pipeline",
    "load_pipeline",
    "prepare_data",
    "split_data",
    "train_pipeline",
]
