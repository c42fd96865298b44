"""The one "higher is better" rule (kexp.monitor)."""

import pytest

from kexp.monitor import direction, higher_is_better


@pytest.mark.parametrize("name, higher", [
    ("accuracy", True), ("val_accuracy", True), ("val_sparse_categorical_accuracy", True),
    ("department_accuracy", True), ("val_auc", True), ("val_r2_score", True),
    ("val_precision", True), ("f1_score", True),
    ("loss", False), ("val_loss", False), ("priority_loss", False),
    ("val_mean_absolute_error", False), ("mse", False), ("learning_rate", False),
])
def test_higher_is_better(name, higher):
    assert higher_is_better(name) is higher
    assert direction(name) == ("maximize" if higher else "minimize")
