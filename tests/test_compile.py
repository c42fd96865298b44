"""kexp.training.compile: model.compile from the config's compile section, and what
`steps_per_execution: auto` picks."""

from __future__ import annotations

import pytest

from kexp.config.schema import CompileSpec
from kexp.training.compile import AUTO_STEPS_PER_EXECUTION, compile_model, steps_per_execution


def _spec(**kwargs) -> CompileSpec:
    return CompileSpec.model_validate({"optimizer": "rmsprop", "loss": "mse", **kwargs})


@pytest.mark.parametrize(("steps", "every_batch", "aligned", "expected"), [
    (100, False, False, AUTO_STEPS_PER_EXECUTION),  # a one-epoch dataset: any chunk
    (5, False, False, 5),                           # never more than an epoch
    (100, False, True, 25),                         # one dataset for all epochs: a divisor
    (97, False, True, 1),                           # a prime number of steps
    (64, False, True, 32),
    (100, True, False, 1),                          # a callback sees every batch
])
def test_auto(steps, every_batch, aligned, expected):
    assert steps_per_execution(_spec(), steps, every_batch, aligned) == expected
    if aligned:
        assert steps % expected == 0


def test_a_number_is_used_as_given():
    assert steps_per_execution(_spec(steps_per_execution=7), 100, True, True) == 7


def test_compile_model_builds_per_output_losses_weights_and_metrics():
    import keras

    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, {"a": keras.layers.Dense(1, name="a")(inputs),
                                 "b": keras.layers.Dense(2, activation="softmax",
                                                         name="b")(inputs)})
    spec = _spec(optimizer={"type": "Adam", "learning_rate": 0.01},
                 loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
                 loss_weights={"a": 1.0, "b": 0.5},
                 metrics={"a": ["mean_absolute_error"], "b": ["accuracy"]})
    compile_model(model, spec, steps_per_epoch=10, every_batch=False, aligned=False)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    assert model.steps_per_execution == 10
    assert model.loss == {"a": "mse", "b": "sparse_categorical_crossentropy"}
    import numpy as np

    x = np.linspace(0, 1, 24, dtype="float32").reshape(8, 3)
    y = {"a": np.ones((8, 1), "float32"), "b": (np.arange(8) % 2).astype("int32")}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert {"a_mean_absolute_error", "b_accuracy"} <= set(logs)
    # The loss weights: the total is a_loss + 0.5 * b_loss.
    assert logs["loss"] == pytest.approx(logs["a_loss"] + 0.5 * logs["b_loss"], rel=1e-5)
