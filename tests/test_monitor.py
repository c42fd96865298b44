"""The one "higher is better" rule (kexp.monitor)."""

import pytest

from kexp.monitor import direction, higher_is_better


@pytest.mark.parametrize("name, higher", [
    ("accuracy", True), ("val_accuracy", True), ("val_sparse_categorical_accuracy", True),
    ("department_accuracy", True), ("val_auc", True), ("val_r2_score", True),
    ("val_precision", True), ("f1_score", True),
    ("loss", False), ("val_loss", False), ("priority_loss", False),
    ("val_mean_absolute_error", False), ("mse", False), ("learning_rate", False),
])
def test_higher_is_better(name, higher):
    assert higher_is_better(name) is higher
    assert direction(name) == ("maximize" if higher else "minimize")


@pytest.mark.parametrize(("callback", "mode"), [
    ("{type: EarlyStopping, monitor: val_r2_score}", "max"),
    ("{type: EarlyStopping, monitor: val_department_accuracy, mode: auto}", "max"),
    ("{type: ReduceLROnPlateau, monitor: val_rmse}", "min"),
    ("{type: ModelCheckpoint, filepath: m.keras}", "min"),  # monitors val_loss
    ("{type: EarlyStopping, monitor: val_r2_score, mode: min}", "min"),  # as written
])
def test_monitoring_callbacks_left_in_auto_get_the_one_rule(write, callback, mode):
    from kexp.config import load_config

    cfg = load_config(write("c.yaml", f"""
        data: {{type: random_classification, num_samples: 64, num_features: 3}}
        model: {{type: sequential, input_shape: [3], layers: [{{type: Dense, units: 2}}]}}
        compile: {{loss: mse, metrics: [R2Score, {{type: RootMeanSquaredError, name: rmse}},
                                       {{type: Accuracy, name: department_accuracy}}]}}
        train: {{callbacks: [{callback}]}}
    """))
    assert cfg.train.callbacks[0].args["mode"] == mode


def test_a_callback_without_a_mode_argument_is_left_alone(write):
    from kexp.config import load_config

    cfg = load_config(write("c.yaml", """
        data: {type: random_classification, num_samples: 64, num_features: 3}
        model: {type: sequential, input_shape: [3], layers: [{type: Dense, units: 2}]}
        train: {callbacks: [{type: CSVLogger, filename: log.csv}]}
    """))
    assert "mode" not in cfg.train.callbacks[0].args
