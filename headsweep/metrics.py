"""Metric names: the one place that defines the strings reports, MLflow and Parquet carry."""

EPOCH = "epoch"
LOSS = "train/loss"  # pretraining objective, without the regulariser
TOTAL_LOSS = "train/total_loss"  # objective + mi_lambda * I_alpha
MI = "train/mi"  # I_2 between encoder and head features [O]
MI_LOWER = "train/mi_lower"  # -InfoNCE(encoder) - I_2 [O]
MI_UPPER = "train/mi_upper"  # H_2(K_encoder) - I_2 [O]
LR = "train/lr"
THROUGHPUT = "train/images_per_s"  # views per second through forward + backward
EPOCH_TIME = "train/epoch_s"
STEPS = "train/steps"  # optimiser steps so far: budgets compare in steps, not epochs (§9)


def probe(target: str, tap: str) -> str:
    """Final frozen-feature probe accuracy: tap is pre, post, gap (pre - post) or a layer."""
    return f"probe/{target}/{tap}"


def online(target: str, tap: str) -> str:
    """Per-epoch ridge probe on a fixed subset (cheap; what schedulers and searchers watch)."""
    return f"online/{target}/{tap}"


def linear_eval(target: str, tap: str) -> str:
    """[O]'s linear evaluation: a linear classifier trained on augmented frozen features."""
    return f"linear/{target}/{tap}"
