"""The plain-Keras twin of ``kexp train --smoke configs/digits_mlp.yaml``.

What a user would write by hand for the same job: scikit-learn's digits scaled to [0, 1], 20%
held out, the same network, optimizer, loss, metric and early stopping, ``model.fit`` on two
batches of training data with two batches of validation data for one epoch, and the trained
model saved. ``python bench/plain_smoke.py [--shortcuts] OUT_DIR``.

``--shortcuts``: the same script with the two process shortcuts kexp takes, so the benchmark
can tell how much of kexp's smoke time is those tricks and how much is kexp: the digits are
read from the CSV file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, found
without importing scikit-learn), and the process ends with ``os._exit`` once the model is
saved and the streams flushed (no interpreter / TensorFlow teardown).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _digits_without_sklearn() -> tuple:
    """``load_digits()``'s ``data`` and ``target`` from the CSV scikit-learn ships."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    folder = next(iter(spec.submodule_search_locations))
    rows = np.loadtxt(Path(folder, "datasets", "data", "digits.csv.gz"), delimiter=",")
    return rows[:, :-1], rows[:, -1].astype(int)


def main(out_dir: str, shortcuts: bool = False) -> int:
    """Train on two batches, validate on two, save ``OUT_DIR/model.keras``."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(42)
    if shortcuts:
        data, y = _digits_without_sklearn()
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        data, y = digits.data, digits.target
    x = (data / 16.0).astype("float32")
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
    fast = "--shortcuts" in sys.argv[1:]
    code = main([a for a in sys.argv[1:] if a != "--shortcuts"][0], shortcuts=fast)
    if fast:  # kexp's ending: flush, then skip the interpreter's and TensorFlow's teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
