"""``random_classification``: small learnable synthetic data for examples and tests."""

from __future__ import annotations

from kexp.data.splits import Split, Splits
from kexp.registry import DATASETS

__all__ = ["random_classification"]


@DATASETS.register("random_classification")
def random_classification(*, num_samples: int = 1000, num_features: int = 8,
                          num_classes: int = 2, seed: int = 0) -> Splits:
    """Gaussian features labelled by a fixed random linear map (so a model can learn them).

    Example:
        ```yaml
        data: {type: random_classification, num_samples: 512, num_features: 3, num_classes: 10}
        ```
    x: float32 (num_samples, num_features); y: int labels in [0, num_classes).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_samples, num_features)).astype("float32")
    weights = rng.normal(size=(num_features, num_classes))
    y = np.argmax(x @ weights, axis=1).astype("int64")
    return Splits(train=Split(x, y, source="random_classification"))
