"""kexp/config: the schema and the registry checks, through load_config."""

from __future__ import annotations

import pytest

from kexp.config import load_config
from kexp.errors import ConfigError

VALID = """
    name: demo
    data: {type: random_classification, num_samples: 64, num_features: 3}
    model:
      type: functional
      inputs: [{name: x, shape: [3]}]
      layers:
        - {type: Dense, units: 8, activation: relu, name: hidden, kernel_regularizer: {type: L2, l2: 0.01}}
        - {type: Dense, units: 2, activation: softmax, name: out}
    compile:
      optimizer: {type: RMSprop, learning_rate: {type: ExponentialDecay, initial_learning_rate: 1e-3, decay_steps: 10, decay_rate: 0.9}}
      loss: sparse_categorical_crossentropy
      metrics: [accuracy]
    train:
      epochs: 2
      callbacks: [{type: EarlyStopping, monitor: val_loss, patience: 1}]
"""


def problems(write, text, sets=()):
    with pytest.raises(ConfigError) as err:
        load_config(write("c.yaml", text), sets)
    return err.value.problems


def test_a_valid_config_becomes_typed_objects(write):
    cfg = load_config(write("c.yaml", VALID))
    assert cfg.run_name() == "demo"
    assert cfg.train.epochs == 2 and cfg.train.loop == "fit"
    assert cfg.model.layers[0].args["units"] == 8
    assert cfg.model.layers[0].path == "model.layers[0]"
    assert cfg.model.layers[0].where.endswith("c.yaml:7:7")
    assert cfg.compile.optimizer.args["learning_rate"]["decay_steps"] == 10
    assert cfg.data.batch_size == 32  # a default


def test_resolved_config_round_trips(write):
    cfg = load_config(write("c.yaml", VALID))
    again = load_config(write("again.yaml", __import__("yaml").safe_dump(cfg.to_yaml_dict())))
    assert again.to_yaml_dict() == cfg.to_yaml_dict()


@pytest.mark.parametrize("change, path, words", [
    ("train.epoch=3", "train.epoch", "did you mean 'epochs'"),
    ("train.epochs=ten", "train.epochs", "expected an integer"),
    ("train.epochs=-1", "train.epochs", "greater than 0"),
    ("data.batch_size=0", "data.batch_size", "greater than 0"),
    ("train.loop=fitt", "train.loop", "did you mean 'fit'"),
    ("model.layers[0].type=Dens", "model.layers[0].type", "did you mean 'Dense'"),
    ("model.layers[0].unitz=3", "model.layers[0].unitz", "did you mean 'units'"),
    ("model.layers[0].activation=rleu", "model.layers[0].activation", "did you mean 'relu'"),
    ("model.layers[1].inputs=hiden", "model.layers[1].inputs", "did you mean 'hidden'"),
    ("compile.optimizer.type=rmsprob", "compile.optimizer.type", "did you mean 'rmsprop'"),
    ("compile.metrics=[acuracy]", "compile.metrics[0].type", "did you mean 'accuracy'"),
    ("compile.loss=3", "compile.loss", "expected a name"),
    ("train.callbacks[0].patiense=2", "train.callbacks[0].patiense", "'patience'"),
    ("data.validation_split=1.5", "data.validation_split", "less than 1"),
    ("data.type=digitz", "data.type", "did you mean 'digits'"),
    ("model.outputs=[nowhere]", "model.outputs", "not a layer"),
    ("distribute.strategy=multi_worker", "train.loop", "keras-team/keras#20585"),
])
def test_each_error_names_the_path_and_the_line(write, change, path, words):
    found = problems(write, VALID, [change])
    assert any(p.path == path and words in str(p) for p in found), [str(p) for p in found]
    assert all(p.where for p in found), [str(p) for p in found]


def test_all_errors_of_a_file_are_reported_together(write):
    found = problems(write, VALID.replace("units: 8", "unitz: 8").replace("epochs: 2", "epochs: x")
                     .replace("type: RMSprop", "type: RMSprob"))
    paths = {p.path for p in found}
    assert {"train.epochs", "compile.optimizer.type", "model.layers[0].unitz"} <= paths
    text = str(ConfigError(found))
    assert "c.yaml:14:" in text  # epochs: x is on line 14


def test_unknown_top_level_key_points_at_its_line(write):
    found = problems(write, VALID + "    trian: {epochs: 3}\n")
    assert found[0].path == "trian" and "did you mean 'train'" in str(found[0])
    assert found[0].where.endswith("c.yaml:16:1")


def test_graph_cycles_and_duplicate_names(write):
    text = VALID.replace("name: hidden,", "name: hidden, inputs: out,")
    assert any("cycle" in p.message for p in problems(write, text))
    text = VALID.replace("name: out", "name: hidden")
    assert any("used twice" in p.message for p in problems(write, text))


def test_loss_keyed_by_an_unknown_output(write):
    text = VALID.replace("loss: sparse_categorical_crossentropy",
                         "loss: {outt: sparse_categorical_crossentropy}")
    found = problems(write, text)
    assert found[0].path == "compile.loss.outt" and "did you mean 'out'" in str(found[0])


def test_missing_required_sections(write):
    found = problems(write, "name: x\n")
    assert {p.path for p in found} == {"data", "model"}


def test_plugins_are_imported_from_files_relative_to_the_config(write):
    write("plugins/mine.py", """
        from kexp.registry import LAYERS
        import keras

        @LAYERS.register()
        class TimesTwo(keras.layers.Layer):
            def __init__(self, factor=2.0, **kwargs):
                super().__init__(**kwargs)
                self.factor = factor

            def call(self, x):
                return x * self.factor
        """)
    text = VALID.replace("    name: demo\n", "    name: demo\n    plugins: [plugins/mine.py]\n")
    text = text.replace("    - {type: Dense, units: 2,", "    - {type: TimesTwo, factor: 3.0}\n"
                        "        - {type: Dense, units: 2,")
    cfg = load_config(write("c.yaml", text))
    assert cfg.model.layers[1].type == "TimesTwo"
    found = problems(write, text.replace("factor: 3.0", "facter: 3.0"))
    assert "did you mean 'factor'" in str(found[0])


def test_unknown_plugin_is_a_config_error(write):
    found = problems(write, VALID + "    plugins: [no_such_plugin_module, missing.py]\n")
    assert [p.path for p in found] == ["plugins[0]", "plugins[1]"]
    assert "no module named" in found[0].message and "does not exist" in found[1].message


@pytest.mark.parametrize("change, path, words", [
    ("model.layers[0].units=abc", "model.layers[0].units", "expects a positive integer"),
    ("model.layers[0].units=-3", "model.layers[0].units", "expects a positive integer"),
    ("model.layers[0].use_bias=maybe", "model.layers[0].use_bias", "expects true or false"),
    ("train.callbacks[0].patience=two", "train.callbacks[0].patience", "expects a number"),
])
def test_wrong_kinds_of_keras_arguments_are_caught_without_tensorflow(write, change, path, words):
    found = problems(write, VALID, [change])
    assert any(p.path == path and words in p.message for p in found), [str(p) for p in found]
