"""kexp/models: building sequential, functional, subclassed and base models from configs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kexp.config import load_config
from kexp.errors import ConfigError
from kexp.models.build import build_model, has_graph
from tests.conftest import CONFIGS


@pytest.fixture(autouse=True)
def _clear():
    keras.backend.clear_session()


def counts(model):
    return [layer.count_params() for layer in model.layers]


def test_named_sequential_model_of_the_chapter():
    model, _ = build_model(load_config(CONFIGS / "listing_7_05_named_sequential.yaml").model)
    assert model.name == "my_example_model"
    assert [layer.name for layer in model.layers] == ["my_first_layer", "my_last_layer"]
    assert counts(model) == [256, 650]


def test_ticket_model_has_three_inputs_two_outputs_and_1286789_parameters():
    model, _ = build_model(load_config(CONFIGS / "ticket_model.yaml").model)
    assert sorted(t.name for t in model.inputs) == ["tags", "text_body", "title"]
    assert model.output_names == ["priority", "department"]
    assert model.count_params() == 1_286_789
    assert has_graph(model)


def test_sequential_without_input_shape_is_unbuilt_until_called():
    model, _ = build_model(load_config(CONFIGS / "listing_7_01_sequential.yaml").model)
    assert not model.built
    model(np.zeros((1, 3), "float32"))
    assert [tuple(w.shape) for w in model.weights] == [(3, 64), (64,), (64, 10), (10,)]


def test_extends_and_set_change_the_parameter_count(write):
    write("base.yaml", (CONFIGS / "listing_7_05_named_sequential.yaml").read_text())
    path = write("child.yaml", "extends: base.yaml\nname: smaller\n")
    cfg = load_config(path, ["model.layers[0].units=32"])
    model, _ = build_model(cfg.model)
    assert counts(model) == [128, 330]


def test_keras_refusal_is_a_config_error_at_the_layer(write):
    path = write("c.yaml", """
        data: {type: random_classification}
        model:
          type: sequential
          input_shape: [3]
          layers: [{type: Dense, units: -4}]
        """)
    with pytest.raises(ConfigError) as err:
        build_model(load_config(path).model)
    assert err.value.problems[0].path == "model.layers[0].units"
    assert "c.yaml:5:26" in str(err.value) and "units" in str(err.value)


def test_plugin_classes_as_models_and_as_nodes():
    cfg = load_config(CONFIGS / "listing_7_15_functional_with_subclass.yaml")
    model, _ = build_model(cfg.model)
    assert model(np.zeros((2, 3), "float32")).shape == (2, 1)  # Classifier(2): one sigmoid
    cfg = load_config(CONFIGS / "listing_7_14_subclassed.yaml")
    model, _ = build_model(cfg.model)
    assert not has_graph(model)
    out = model({"title": np.zeros((2, 10000)), "text_body": np.zeros((2, 10000)),
                 "tags": np.zeros((2, 100))})
    assert out["priority"].shape == (2, 1) and out["department"].shape == (2, 4)


def test_feature_extraction_from_a_saved_model(write, tmp_path):
    base, _ = build_model(load_config(CONFIGS / "ticket_model.yaml").model)
    base.save(tmp_path / "ticket.keras")
    path = write("extract.yaml", """
        data: {type: synthetic_tickets, num_samples: 64}
        model:
          type: functional
          base: ticket.keras
          trainable: false
          layers:
            - {type: Dense, units: 3, activation: softmax, name: difficulty, inputs: features}
          outputs: [priority, department, difficulty]
        """)
    model, _ = build_model(load_config(path).model)
    assert model.output_names == ["priority", "department", "difficulty"]
    assert model.count_params() == 1_286_789 + 64 * 3 + 3
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 64 * 3 + 3


def test_base_layer_references_are_checked_without_tensorflow(write, tmp_path):
    base, _ = build_model(load_config(CONFIGS / "ticket_model.yaml").model)
    base.save(tmp_path / "ticket.keras")
    path = write("extract.yaml", """
        data: {type: synthetic_tickets}
        model:
          type: functional
          base: ticket.keras
          layers: [{type: Dense, units: 3, name: difficulty, inputs: featurez}]
        """)
    with pytest.raises(ConfigError, match="did you mean 'features'"):
        load_config(path)
    path = write("bad.yaml", "data: {type: digits}\nmodel: {type: functional, base: c.txt}\n")
    (tmp_path / "c.txt").write_text("not a model")
    with pytest.raises(ConfigError, match="not a .keras model file"):
        load_config(path)
