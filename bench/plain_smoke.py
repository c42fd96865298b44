"""The plain-Keras twin of ``kexp train --smoke configs/digits_mlp.yaml``.

What a user would write by hand for the same job: scikit-learn's digits scaled to [0, 1], 20%
held out, the same network, optimizer, loss, metric and early stopping, ``model.fit`` on two
batches of training data with two batches of validation data for one epoch, and the trained
model saved. ``python bench/plain_smoke.py OUT_DIR``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(out_dir: str) -> int:
    """Train on two batches, validate on two, save ``OUT_DIR/model.keras``."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(42)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target
    order = np.random.default_rng(42).permutation(len(x))
    held_out = len(x) // 5
    val, train = order[:held_out], order[held_out:]
    batch, batches = 32, 2

    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(128, activation="relu", name="hidden"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax", name="digit"),
    ], name="digits_mlp")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[train[:batch * batches]], y[train[:batch * batches]], batch_size=batch,
              epochs=1,
              validation_data=(x[val[:batch * batches]], y[val[:batch * batches]]),
              callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=5)])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save(Path(out_dir) / "model.keras")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
