"""kexp/plugins.py and the arguments of plugin classes: a plugin written the way a Keras user
writes one (a ``.py`` file, ``@LAYERS.register()`` on a subclass whose ``__init__`` takes
``**kwargs`` and hands them to its Keras base) takes every keyword its Keras base takes, as
``kexp validate`` checks it and as ``kexp train`` builds it."""

from __future__ import annotations

import csv
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kexp.plugins import PluginError, import_plugin
from kexp.registry import CALLBACKS, LAYERS, LOSSES, METRICS, MODELS, OPTIMIZERS, signature_of

PLUGIN = '''
import keras

from kexp.registry import CALLBACKS, LAYERS, LOSSES, METRICS, MODELS, OPTIMIZERS


@LAYERS.register()
class SigScale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@LAYERS.register()
@MODELS.register()
class SigClassifier(keras.Model):
    def __init__(self, num_classes=2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dense = keras.layers.Dense(num_classes, activation="softmax")

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@OPTIMIZERS.register()
class SigSGD(keras.optimizers.SGD):
    def __init__(self, boost=1.0, **kwargs):
        super().__init__(**kwargs)
        self.boost = boost


@LOSSES.register()
class SigCrossentropy(keras.losses.Loss):
    def __init__(self, smoothing=0.0, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.losses.SparseCategoricalCrossentropy()

    def call(self, y_true, y_pred):
        return self.inner(y_true, y_pred)


@METRICS.register()
class SigMeanConfidence(keras.metrics.Metric):
    def __init__(self, power=1, **kwargs):
        super().__init__(**kwargs)
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        confidence = keras.ops.max(y_pred, axis=-1)
        self.total.assign_add(keras.ops.sum(confidence))
        self.count.assign_add(keras.ops.cast(keras.ops.shape(confidence)[0], "float32"))

    def result(self):
        return self.total / keras.ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)


@CALLBACKS.register()
class SigEpochCounter(keras.callbacks.Callback):
    def __init__(self, every=1, **kwargs):
        super().__init__(**kwargs)
        self.every = every
'''

CONFIG = """
plugins: [sig_plugin.py]
data: {type: random_classification, num_samples: 64, num_features: 4, num_classes: 3,
       validation_split: 0.25, batch_size: 16}
model:
  type: functional
  inputs: [{name: x, shape: [4]}]
  layers:
    - {type: SigScale, factor: 0.5, name: scaled, trainable: false, dtype: float32}
    - {type: SigClassifier, num_classes: 3, name: head}
  outputs: head
compile:
  optimizer: {type: SigSGD, boost: 2.0, learning_rate: 0.01, name: my_sgd, clipnorm: 1.0}
  loss: {type: SigCrossentropy, smoothing: 0.1, name: xent, reduction: sum_over_batch_size}
  metrics: [{type: SigMeanConfidence, power: 2, name: confidence, dtype: float32}]
train:
  epochs: 2
  callbacks:
    - {type: SigEpochCounter, every: 2}
    - {type: EarlyStopping, monitor: val_confidence, patience: 3}
"""

NAMES = ("SigScale", "SigClassifier", "SigSGD", "SigCrossentropy", "SigMeanConfidence",
         "SigEpochCounter")


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "sig_plugin.py").write_text(PLUGIN)
    (tmp_path / "model.yaml").write_text(textwrap.dedent(CONFIG).lstrip())
    yield tmp_path
    for registry in (LAYERS, MODELS, OPTIMIZERS, LOSSES, METRICS, CALLBACKS):
        for name in NAMES:
            registry.unregister(name)


@pytest.fixture
def plugin(plugin_dir):
    import_plugin(str(plugin_dir / "sig_plugin.py"))
    return plugin_dir


# Per Keras base class: a registered plugin class, keywords its Keras base takes through
# ``**kwargs`` (which Keras really accepts), and one that Keras refuses.
BASES = [
    ("layer", LAYERS, "SigScale", {"name": "s", "trainable": False, "dtype": "float32",
                                   "input_shape": (3,)}, "units"),
    ("model", MODELS, "SigClassifier", {"name": "head", "trainable": False,
                                        "dtype": "float32"}, "layers"),
    ("optimizer", OPTIMIZERS, "SigSGD", {"name": "o", "learning_rate": 0.1, "clipnorm": 1.0,
                                         "momentum": 0.9}, "beta_1"),
    ("loss", LOSSES, "SigCrossentropy", {"name": "l", "reduction": "sum", "dtype": "float32"},
     "from_logits"),
    ("metric", METRICS, "SigMeanConfidence", {"name": "m", "dtype": "float32"}, "threshold"),
    ("callback", CALLBACKS, "SigEpochCounter", {}, "name"),
]


@pytest.mark.parametrize("kind,registry,name,accepted,refused", BASES,
                         ids=[b[0] for b in BASES])
def test_a_plugin_class_takes_what_its_keras_base_takes(plugin, kind, registry, name,
                                                        accepted, refused):
    entry = registry.get(name)
    assert entry.origin == "plugin" and not entry.open_kwargs
    missing = [k for k in accepted if k not in entry.params]
    assert not missing, f"{name} should accept {missing}: {entry.params}"
    assert refused not in entry.params
    cls = entry.load()
    built = cls(**accepted)  # Keras itself agrees
    if "name" in accepted:
        assert built.name == accepted["name"]
    with pytest.raises((TypeError, ValueError)):
        cls(**{refused: 1})


def test_keras_layer_keywords_are_what_layer_really_takes():
    """Layer pops ``input_shape`` / ``input_dim`` from its ``**kwargs`` and refuses the rest
    (``batch_size``, ``weights``: Keras 2's keywords)."""
    params = LAYERS.get("Dense").params
    assert {"name", "trainable", "dtype", "autocast", "input_shape", "input_dim"} <= set(params)
    assert not {"batch_size", "weights", "batch_input_shape"} & set(params)


@pytest.mark.parametrize("registry,name,accepted,refused", [
    (LAYERS, "Dense", ("name", "trainable", "dtype", "input_shape"), "batch_size"),
    (OPTIMIZERS, "Adam", ("name", "learning_rate", "clipnorm", "weight_decay"), "momentum"),
    (LOSSES, "MeanSquaredError", ("name", "reduction", "dtype"), "from_logits"),
    (METRICS, "Accuracy", ("name", "dtype"), "threshold"),
    (CALLBACKS, "EarlyStopping", ("monitor", "patience", "mode"), "name"),
], ids=["layer", "optimizer", "loss", "metric", "callback"])
def test_a_keras_class_takes_what_keras_takes(registry, name, accepted, refused):
    """The catalog (no TensorFlow) agrees with the installed Keras class."""
    entry = registry.get(name)
    assert entry.origin == "keras" and not entry.open_kwargs
    assert set(accepted) <= set(entry.params) and refused not in entry.params


def test_the_model_base_hands_its_keywords_to_layer():
    import keras

    params, required, open_kwargs = signature_of(keras.Model)
    assert {"name", "trainable", "dtype"} <= set(params) and not open_kwargs


def test_validate_and_train_take_keras_keywords_on_plugin_classes(kexp, plugin_dir):
    config = plugin_dir / "model.yaml"
    assert kexp("validate", config).exit_code == 0
    result = kexp("train", config, "--runs-dir", plugin_dir / "runs")
    assert result.exit_code == 0, result.stderr
    run = next((plugin_dir / "runs").glob("*/*"))
    summary = (run / "summary.txt").read_text()
    assert "scaled (SigScale)" in summary and "head (SigClassifier)" in summary
    rows = list(csv.reader((run / "history.csv").open()))
    assert "confidence" in rows[0] and "val_confidence" in rows[0]
    assert len(rows) == 3  # Keras's own `mode: auto` fails on a metric without a direction
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["callbacks"][1] == {"type": "EarlyStopping", "patience": 3,
                                                 "monitor": "val_confidence", "mode": "min"}


def test_a_misspelled_keyword_of_a_plugin_model_is_still_refused(kexp, plugin_dir):
    config = plugin_dir / "model.yaml"
    text = config.read_text().replace("name: head", "nmae: head")
    config.write_text(text)
    result = kexp("validate", config)
    assert result.exit_code == 2
    assert "model.yaml:9:" in result.stderr
    assert "model.layers[1].nmae: SigClassifier has no argument 'nmae'" in result.stderr
    assert "did you mean 'name'" in result.stderr


def test_a_callback_takes_no_keras_keywords(kexp, plugin_dir):
    """keras.callbacks.Callback.__init__ takes nothing: ``name:`` is refused by validate as
    Keras would refuse it."""
    config = plugin_dir / "model.yaml"
    config.write_text(config.read_text().replace("every: 2}", "every: 2, name: counter}"))
    result = kexp("validate", config)
    assert result.exit_code == 2
    assert "train.callbacks[0].name: SigEpochCounter has no argument 'name'" in result.stderr


# --------------------------------------------------------------------------- import_plugin


def test_a_plugin_file_is_imported_once(tmp_path):
    path = tmp_path / "counting.py"
    path.write_text("import builtins\nbuiltins.kexp_count = getattr(builtins, 'kexp_count', 0) + 1\n")
    import builtins

    first = import_plugin(str(path))
    assert import_plugin(str(path)) is first
    assert builtins.kexp_count == 1
    del builtins.kexp_count


def test_a_failing_plugin_names_its_own_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("x = 1\ny = x / 0\n")
    with pytest.raises(PluginError, match=r"ZeroDivisionError.*line 2 of .*broken\.py"):
        import_plugin(str(path))
    assert not [m for m in sys.modules if m.startswith("kexp_plugins.broken_")]


def test_a_missing_module_or_file_says_so(tmp_path):
    with pytest.raises(PluginError, match="no module named 'no_such_kexp_module'"):
        import_plugin("no_such_kexp_module")
    with pytest.raises(PluginError, match="does not exist"):
        import_plugin(str(Path(tmp_path) / "nothing.py"))
