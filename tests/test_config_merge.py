"""extends: a component whose type changes is replaced whole; `_replace_: true` replaces a
mapping whole; everything else deep-merges (issue #21 item 3)."""

from __future__ import annotations

from conftest import run_kexp

BASE = """
model:
  type: sequential
  input_shape: [4]
  layers:
    - {type: Dense, units: 2, activation: softmax}
compile:
  optimizer: {type: Adam, beta_1: 0.8, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
train:
  epochs: 3
  callbacks:
    - {type: EarlyStopping, patience: 2}
"""


def _resolved(write, text: str):
    from kexp.config import load_config

    write("base.yaml", BASE)
    return load_config(write("exp.yaml", text), model_only=True)


def test_a_new_type_replaces_the_base_component(write):
    cfg = _resolved(write, """
        extends: base.yaml
        compile:
          optimizer: {type: SGD, momentum: 0.9}
        """)
    assert cfg.compile.optimizer.type == "SGD"
    assert cfg.compile.optimizer.args == {"momentum": 0.9}      # no beta_1, no learning_rate


def test_the_same_type_merges_arguments(write):
    cfg = _resolved(write, """
        extends: base.yaml
        compile:
          optimizer: {type: Adam, learning_rate: 0.001}
        """)
    assert cfg.compile.optimizer.args == {"beta_1": 0.8, "learning_rate": 0.001}


def test_arguments_without_a_type_merge_into_the_base(write):
    cfg = _resolved(write, """
        extends: base.yaml
        compile:
          optimizer: {learning_rate: 0.5}
        """)
    assert cfg.compile.optimizer.type == "Adam"
    assert cfg.compile.optimizer.args == {"beta_1": 0.8, "learning_rate": 0.5}


def test_replace_drops_base_keys_without_changing_the_type(write):
    cfg = _resolved(write, """
        extends: base.yaml
        compile:
          optimizer: {_replace_: true, type: Adam, learning_rate: 0.002}
        """)
    assert cfg.compile.optimizer.args == {"learning_rate": 0.002}
    assert "_replace_" not in str(cfg.to_yaml_dict())


def test_train_and_validate_accept_the_replaced_component(write, tmp_path):
    write("base.yaml", BASE + "data: {type: random_classification, num_samples: 64, "
          "num_features: 4, num_classes: 2, validation_split: 0.25}\n")
    path = write("exp.yaml", """
        extends: base.yaml
        runs_dir: runs
        train: {epochs: 1}
        compile:
          optimizer: {type: SGD, momentum: 0.9}
        """)
    result = run_kexp("validate", path)
    assert result.returncode == 0, result.stderr
    result = run_kexp("train", path, "--smoke", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
