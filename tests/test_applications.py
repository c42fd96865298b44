"""Keras Applications as components: the catalog, building them from configs, their
preprocess_input as a layer, weights from a local file, freezing by name, offline imagenet."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from kexp.config import load_config
from kexp.errors import ConfigError
from kexp.models import applications
from kexp.models.build import build_model
from kexp.registry import MODELS
from tests.conftest import run_kexp


@pytest.fixture(autouse=True)
def _clear():
    keras.backend.clear_session()


FIVE = """
data: {type: digits}
model:
  type: functional
  inputs: [{name: image, shape: [32, 32, 3]}]
  layers:
    - {type: MobileNetV2, alpha: 0.35, include_top: false, weights: null, pooling: avg,
       name: mobilenet_v2, inputs: image}
    - {type: MobileNetV3Small, alpha: 0.75, minimalistic: true, include_top: false,
       weights: null, pooling: avg, name: mobilenet_v3, inputs: image}
    - {type: EfficientNetB0, include_top: false, weights: null, pooling: avg,
       name: efficientnet, inputs: image}
    - {type: ResNet50, include_top: false, weights: null, pooling: max, name: resnet,
       inputs: image}
    - {type: ConvNeXtTiny, include_top: false, weights: null, pooling: avg, name: convnext,
       inputs: image}
    - {type: Concatenate, inputs: [mobilenet_v2, mobilenet_v3, efficientnet, resnet, convnext],
       name: features}
    - {type: Dense, units: 3, activation: softmax, name: head}
"""

# name -> (output shape, parameters), as Keras 3.15 builds them at 32 x 32 without a top
FIVE_SHAPES = {
    "mobilenet_v2": ("(None, 1280)", "410,208"),
    "mobilenet_v3": ("(None, 432)", "273,800"),
    "efficientnet": ("(None, 1280)", "4,049,571"),
    "resnet": ("(None, 2048)", "23,587,712"),
    "convnext": ("(None, 768)", "27,820,128"),
}

SMALL = """
data: {{type: digits}}
model:
  type: functional
  inputs: [{{name: image, shape: [32, 32, 3]}}]
  layers:
    - {{type: Preprocess, application: MobileNetV2, name: pre}}
    - {{type: MobileNetV2, alpha: 0.35, include_top: false, weights: {weights}, pooling: avg,
       name: backbone{extra}}}
    - {{type: Dense, units: 2, activation: softmax, name: head}}
{model_extra}
"""


def small(write, weights="null", extra="", model_extra="", name="c.yaml"):
    return write(name, SMALL.format(weights=weights, extra=extra, model_extra=model_extra))


def test_applications_are_models_in_the_catalog_with_their_arguments(kexp):
    entry = MODELS.get("MobileNetV2")
    assert entry.origin == "keras" and entry.owner == "keras.applications"
    assert {"alpha", "include_top", "weights", "pooling", "input_shape", "trainable"} <= set(
        entry.params)
    assert applications.application_info("MobileNetV2") == {
        "preprocess": "keras.applications.mobilenet_v2"}
    assert applications.application_info("EfficientNetB0") == {"preprocess": None}
    listed = kexp("list", "models").stdout
    for name in ("MobileNetV2", "EfficientNetB0", "ResNet50", "ConvNeXtTiny", "VGG16"):
        assert name in listed


def test_five_applications_from_config_in_kexp_summary(kexp, write):
    result = kexp("summary", write("five.yaml", FIVE))
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│") and "(Functional)" in line}
    assert set(rows) == set(FIVE_SHAPES)
    for name, (shape, params) in FIVE_SHAPES.items():
        assert shape in rows[name] and params in rows[name], rows[name]
    assert "Total params: 56,158,846" in result.stdout


def test_application_in_a_sequential_model_takes_the_incoming_shape(write):
    path = write("s.yaml", """
        data: {type: digits}
        model:
          type: sequential
          input_shape: [48, 48, 3]
          layers:
            - {type: Preprocess, application: ResNet50}
            - {type: MobileNetV2, alpha: 0.35, include_top: false, weights: null,
               pooling: avg, trainable: false}
            - {type: Dense, units: 4}
    """)
    model, _ = build_model(load_config(path).model)
    backbone = model.layers[1]
    assert backbone.input_shape == (None, 48, 48, 3)
    assert not backbone.trainable and backbone.trainable_weights == []
    assert len(model.trainable_weights) == 2  # the Dense head only


def test_validate_checks_application_arguments_without_tensorflow(kexp, write, tmp_path):
    path = small(write, extra=", alpah: 0.5, classes: many")
    result = kexp("validate", path)
    assert result.exit_code == 2
    assert "MobileNetV2 has no argument 'alpah'; did you mean 'alpha'?" in result.stderr
    assert "MobileNetV2's 'classes' expects a number" in result.stderr
    result = kexp("validate", small(write, weights="missing.weights.h5"))
    assert result.exit_code == 2
    assert f"weights file {tmp_path / 'missing.weights.h5'} does not exist" in result.stderr
    assert "c.yaml:7:" in result.stderr


@pytest.mark.parametrize("application, message", [
    ("EfficientNetB0", "EfficientNetB0 includes its own preprocessing"),
    ("MobileNetV9", "'MobileNetV9' is not a Keras application; did you mean 'MobileNetV2'"),
])
def test_preprocess_names_an_application_with_a_preprocess_input(kexp, write, application,
                                                                   message):
    path = write("p.yaml", f"""
        data: {{type: digits}}
        model:
          type: sequential
          input_shape: [32, 32, 3]
          layers: [{{type: Preprocess, application: {application}}}, {{type: Flatten}}]
    """)
    result = kexp("validate", path)
    assert result.exit_code == 2
    assert "model.layers[0].application" in result.stderr and message in result.stderr


def test_preprocess_layer_matches_keras_and_reloads_in_safe_mode(write, tmp_path):
    from kexp.evaluation import load_run_model

    model, _ = build_model(load_config(small(write)).model)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    pre = model.get_layer("pre")
    expected = keras.applications.mobilenet_v2.preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(pre(images)), expected, rtol=1e-6)
    model.save(tmp_path / "m.keras")
    reloaded = load_run_model(tmp_path / "m.keras", compile=False)
    assert type(reloaded.get_layer("pre")).__name__ == "ApplicationPreprocess"
    np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))
    from kexp.models.preprocess import ApplicationPreprocess

    # ResNet50's preprocess_input flips RGB to BGR and subtracts ImageNet's means
    out = np.asarray(ApplicationPreprocess("ResNet50")(images))
    np.testing.assert_allclose(out, keras.applications.resnet50.preprocess_input(images.copy()),
                               rtol=1e-6)


def test_weights_from_a_local_file_relative_to_the_config(write, tmp_path):
    source = keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                            input_shape=(32, 32, 3), pooling="avg")
    source.set_weights([np.random.default_rng(i).normal(size=w.shape).astype("float32")
                        for i, w in enumerate(source.get_weights())])
    (tmp_path / "weights").mkdir()
    source.save_weights(tmp_path / "weights" / "backbone.weights.h5")
    cfg = load_config(small(write, weights="weights/backbone.weights.h5"))
    assert cfg.model.layers[1].args["weights"] == str(tmp_path / "weights" / "backbone.weights.h5")
    model, _ = build_model(cfg.model)
    for got, want in zip(model.get_layer("backbone").get_weights(), source.get_weights(),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_freeze_and_unfreeze_by_sublayer_name(write):
    path = small(write, extra=", trainable: false", model_extra=(
        "  unfreeze: {layer: backbone, from: block_13_expand}\n"
        "  freeze: {layer: backbone, until: block_14_add}\n"))
    model, _ = build_model(load_config(path).model)
    backbone = model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]
    start, stop = names.index("block_13_expand"), names.index("block_14_add")
    for i, layer in enumerate(backbone.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        assert layer.trainable == (i > stop and not is_bn), layer.name
    trainable = {v.path for v in backbone.trainable_weights}
    assert trainable and all(not p.startswith(tuple(names[:stop + 1])) for p in trainable)
    assert start < stop


def test_frozen_batch_normalization_runs_in_inference_mode():
    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, keras.layers.Dense(1)(bn(inputs)))
    bn.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 4)).astype("float32")
    before = [np.copy(w) for w in bn.get_weights()]
    model.fit(x, np.zeros((64, 1)), epochs=1, batch_size=16, verbose=0)
    for got, want in zip(bn.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)  # no moving statistics updated
    np.testing.assert_array_equal(np.asarray(bn(x, training=True)),
                                  np.asarray(bn(x, training=False)))


@pytest.mark.parametrize("model_extra, path, message", [
    ("  unfreeze: {layer: backbone, from: block_13_expnad}\n", "model.unfreeze.from",
     "'block_13_expnad' is not a sublayer of 'backbone'"),
    ("  freeze: {layer: head, until: x}\n", "model.freeze.until",
     "'head' is a Dense without sublayers"),
])
def test_bad_sublayer_names_are_config_errors(write, model_extra, path, message):
    with pytest.raises(ConfigError) as err:
        build_model(load_config(small(write, model_extra=model_extra)).model)
    problem = err.value.problems[0]
    assert problem.path == path and message in problem.message
    assert problem.where.startswith(str(write("x", "").parent / "c.yaml") + ":10:")


def test_unknown_freeze_layer_is_caught_by_validate(kexp, write):
    result = kexp("validate", small(write, model_extra="  freeze: {layer: backbnoe}\n"))
    assert result.exit_code == 2
    assert "model.freeze.layer: 'backbnoe' is not a named layer" in result.stderr
    assert "did you mean 'backbone'?" in result.stderr


def test_imagenet_weights_offline_fail_fast_naming_the_cache(write, tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    from kexp.data.keras_datasets import DOWNLOAD_TIMEOUT

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    seen = {}

    def offline(fname, origin, *args, **kwargs):
        seen.update(fname=fname, timeout=__import__("socket").getdefaulttimeout(), **kwargs)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(applications.WeightsUnavailable) as err:
        build_model(load_config(small(write, weights="imagenet")).model)
    cache = tmp_path / "keras" / "models" / seen["fname"]
    assert seen["timeout"] == DOWNLOAD_TIMEOUT and seen["cache_dir"] == str(tmp_path / "keras")
    problem = err.value.problems[0]
    assert problem.path == "model.layers[1].weights" and ":7:" in problem.where
    assert str(cache) in problem.message and "no network" in problem.message
    assert err.value.cache_file == cache
    with applications.no_weight_downloads(), pytest.raises(applications.WeightsUnavailable):
        monkeypatch.setattr(file_utils, "get_file", pytest.fail)  # not even tried
        build_model(load_config(small(write, weights="imagenet")).model)


def test_train_with_imagenet_weights_offline_exits_2_before_any_run(write, tmp_path):
    path = small(write, weights="imagenet")
    started = time.monotonic()
    # An empty Keras cache, and a proxy on a closed port: the download fails at once, as
    # without network (no network is used by the test).
    result = run_kexp("train", path, "--runs-dir", tmp_path / "runs", env={
        "KERAS_HOME": str(tmp_path / "keras"), "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""})
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 120  # generous: the TF start-up on a loaded machine
    cache = tmp_path / "keras" / "models" / (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
    assert f"not in Keras's cache ({cache})" in result.stderr
    assert "model.layers[1].weights" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
