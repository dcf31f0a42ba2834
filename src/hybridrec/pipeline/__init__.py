"""Pipelines: offline training and evaluation, and retraining from feedback (deploy if better)."""

from hybridrec.pipeline.artifacts import TrainedPipeline, load_pipeline
from hybridrec.pipeline.retrain import RetrainResult, retrain_once
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
    "RetrainResult",
    "TrainResult",
    "TrainedPipeline",
    "evaluate_pipeline",
    "load_pipeline",
    "prepare_data",
    "retrain_once",
    "split_data",
    "train_pipeline",
]
