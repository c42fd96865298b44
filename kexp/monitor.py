"""Which way is better for a logged metric: the one rule kexp uses everywhere.

Checkpoints (``best.keras``), the default ``mode`` of monitoring callbacks, ``kexp runs``,
``kexp compare`` and a sweep's direction all ask ``higher_is_better``, so a metric such as
``val_r2_score`` has the same "best" epoch in every place. No TensorFlow is imported.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["direction", "higher_is_better"]

# Names (or parts of names) of metrics where a larger value is better, as Keras's own metrics
# declare it (``accuracy``, ``auc``, ``precision``, ``recall``, ``f1_score``, ``iou``,
# ``r2_score``, the true positive / negative counts).
_HIGHER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "true_positives",
           "true_negatives", "specificity", "sensitivity", "cosine_similarity")


def higher_is_better(metric: str) -> bool:
    """True when a larger value of ``metric`` (a ``history.csv`` column) is better.

    ``val_`` prefixes and output-name prefixes (``department_accuracy``) do not change the
    answer; anything with ``loss`` in its name is lower-is-better.
    """
    name = metric.removeprefix("val_").lower()
    if "loss" in name:
        return False
    return any(part in name for part in _HIGHER)


def direction(metric: str) -> Literal["maximize", "minimize"]:
    """``"maximize"`` or ``"minimize"``: ``higher_is_better`` in Optuna's words."""
    return "maximize" if higher_is_better(metric) else "minimize"
