"""kexp/components.py (building a component) and the one walk of ``{type: ..., **kwargs}``
it shares with the config check (``kexp.registry.nested_components``)."""

from __future__ import annotations

import textwrap

import pytest

from kexp.components import build, build_value
from kexp.config import load_config
from kexp.config.check import check_component
from kexp.config.schema import Component
from kexp.errors import ConfigError
from kexp.registry import (
    ACTIVATIONS,
    CALLBACKS,
    LAYERS,
    LOSSES,
    OPTIMIZERS,
    REGULARIZERS,
    SCHEDULES,
    nested_components,
)

STACK_PLUGIN = '''
import keras

from kexp.registry import LAYERS


@LAYERS.register()
class BlockStack(keras.layers.Layer):
    """Calls its blocks (layers given in the config) one after the other."""

    def __init__(self, blocks, **kwargs):
        super().__init__(**kwargs)
        self.blocks = list(blocks)

    def call(self, inputs):
        for block in self.blocks:
            inputs = block(inputs)
        return inputs
'''

CONFIG = """
plugins: [stack.py]
data: {type: random_classification, num_samples: 32, num_features: 3}
model:
  type: sequential
  input_shape: [3]
  layers:
    - type: BlockStack
      name: stack
      blocks:
        - {type: Dense, units: 5, activation: relu, kernel_regularizer: {type: L2, l2: 0.1}}
        - {type: Dropout, rate: 0.1}
    - {type: Dense, units: 2}
"""


@pytest.fixture
def stack_config(tmp_path):
    (tmp_path / "stack.py").write_text(STACK_PLUGIN)
    config = tmp_path / "model.yaml"
    config.write_text(textwrap.dedent(CONFIG).lstrip())
    yield config
    LAYERS.unregister("BlockStack")


def test_the_walk_finds_components_wherever_they_are_written():
    args = {
        "kernel_regularizer": {"type": "L2", "l2": 0.1},
        "activation": "relu",
        "units": 3,
        "blocks": [{"type": "Dense", "units": 2}, {"plain": {"type": "Dropout", "rate": 0.5}}],
        "features": {"title": "x_title"},
    }
    found = {n.keys: n for n in nested_components(args, (LAYERS,))}
    assert set(found) == {("kernel_regularizer",), ("activation",), ("blocks", 0),
                          ("blocks", 1, "plain")}
    assert found[("kernel_regularizer",)].registries == (REGULARIZERS,)
    assert found[("activation",)].registries == (ACTIVATIONS,)
    assert found[("blocks", 0)].registries[0] is LAYERS  # the parent's registry first
    assert found[("blocks", 1, "plain")].path("model.layers[0]") == \
        "model.layers[0].blocks[1].plain"


def test_a_list_of_nested_layers_is_checked_and_built(kexp, stack_config):
    assert kexp("validate", stack_config).exit_code == 0
    cfg = load_config(stack_config)
    from kexp.models.build import build_model

    model, _ = build_model(cfg.model)
    stack = model.get_layer("stack")
    dense, dropout = stack.blocks
    assert type(dense).__name__ == "Dense" and dense.units == 5
    assert type(dense.kernel_regularizer).__name__ == "L2"
    assert type(dropout).__name__ == "Dropout" and dropout.rate == 0.1
    assert model.output_shape == (None, 2)


def test_a_misspelled_nested_layer_is_found_by_validate(kexp, stack_config):
    stack_config.write_text(stack_config.read_text().replace("type: Dropout", "type: Dropuot"))
    result = kexp("validate", stack_config)
    assert result.exit_code == 2
    assert "model.yaml:11:" in result.stderr
    assert "model.layers[0].blocks[1].type: unknown component 'Dropuot'" in result.stderr
    assert "did you mean 'Dropout'" in result.stderr


def test_build_and_check_say_the_same_about_an_unknown_name():
    comp = Component(type="Dens")
    comp.locate("model.layers[0]", "x.yaml:3:7")
    (checked,) = check_component(comp, (LAYERS,))
    with pytest.raises(ConfigError) as built:
        build(comp, LAYERS)
    (problem,) = built.value.problems
    assert (problem.path, problem.message, problem.suggestion) == \
        (checked.path, checked.message, checked.suggestion) == \
        ("model.layers[0].type", "unknown layer 'Dens'", "'Dense'")
    assert problem.where == "x.yaml:3:7"


def test_a_keras_refusal_names_the_argument():
    with pytest.raises(ConfigError) as err:
        build_value("Dense", {"units": -3}, (LAYERS,), "model.layers[1]", "x.yaml:6:7")
    (problem,) = err.value.problems
    assert problem.path == "model.layers[1].units" and problem.where == "x.yaml:6:7"
    assert problem.message.startswith("Dense: ") and "units" in problem.message


def test_identifiers_stay_strings_and_learning_rates_become_floats():
    assert build_value("mse", {}, (LOSSES,), "compile.loss", "") == "mse"
    optimizer = build_value("SGD", {"learning_rate": 1}, (OPTIMIZERS,), "compile.optimizer", "")
    assert float(optimizer.learning_rate) == 1.0


def test_a_registered_schedule_function_is_passed_as_itself():
    def halve(epoch, lr):
        return lr / 2

    SCHEDULES.register("halve_for_test")(halve)
    try:
        callback = build_value("LearningRateScheduler", {"schedule": "halve_for_test"},
                               (CALLBACKS,), "train.callbacks[0]", "")
        assert callback.schedule is halve
    finally:
        SCHEDULES.unregister("halve_for_test")
