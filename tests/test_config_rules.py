"""kexp/config/rules.py and components' own argument rules (``register(check=...)``): what
each refuses is in the bad-input corpus (tests/test_bad_input.py, where ``kexp validate`` and
``kexp train`` must say the same); here, what they must let through."""

from __future__ import annotations

import pytest

from kexp.config import load_config
from kexp.errors import ConfigError
from kexp.registry import DATASETS

BASE = """
data: {type: random_classification, num_samples: 64, num_features: 3}
model: {type: sequential, input_shape: [3], layers: [{type: Dense, units: 2}]}
"""


@pytest.mark.parametrize("sets", [
    ("distribute.strategy=mirrored", "distribute.devices=[/cpu:0]"),
    ("distribute.strategy=multi_worker", "train.loop=custom", "distribute.communication=ring"),
    ("distribute.strategy=mirrored", "compile.steps_per_execution=4", "train.loop=custom"),
    ("distribute.strategy=mirrored", "compile.steps_per_execution=1"),
    ("compile.steps_per_execution=32",),
    ("data.validation_split=0.25",),
], ids=["mirrored-devices", "multi_worker-communication", "custom-loop-spe",
        "fit-spe-1", "default-strategy-spe", "validation_split"])
def test_what_the_rules_let_through(write, sets):
    cfg = load_config(write("c.yaml", BASE), list(sets))
    assert cfg.model.kind == "sequential"


def test_several_rules_are_reported_together(write):
    with pytest.raises(ConfigError) as err:
        load_config(write("c.yaml", BASE), ["distribute.devices=[/cpu:0]",
                                            "distribute.communication=ring"])
    paths = [p.path for p in err.value.problems]
    assert paths == ["distribute.devices", "distribute.communication"]
    assert all("--set distribute." in p.where for p in err.value.problems)


@pytest.fixture
def checked_dataset():
    def check(args):
        if args.get("low", 0) >= args.get("high", 1):
            return [("high", f"must be above low ({args.get('low', 0)})")]
        return []

    @DATASETS.register("ranged_for_test", check=check)
    def ranged(*, low: float = 0, high: float = 1):
        raise AssertionError("never built by these tests")

    yield
    DATASETS.unregister("ranged_for_test")


def test_a_component_rule_runs_in_the_config_check(write, checked_dataset):
    text = BASE.replace("{type: random_classification, num_samples: 64, num_features: 3}",
                        "{type: ranged_for_test, low: 2, high: 1}")
    with pytest.raises(ConfigError) as err:
        load_config(write("c.yaml", text))
    (problem,) = err.value.problems
    assert problem.path == "data.high"
    assert problem.message == "ranged_for_test: must be above low (2)"
    assert problem.where.endswith("c.yaml:1:39")  # the key `high`
    load_config(write("c.yaml", text.replace("high: 1", "high: 3")))


def test_a_component_rule_waits_for_its_arguments_to_be_known(write, checked_dataset):
    text = BASE.replace("{type: random_classification, num_samples: 64, num_features: 3}",
                        "{type: ranged_for_test, low: 2, hihg: 1}")
    with pytest.raises(ConfigError) as err:
        load_config(write("c.yaml", text))
    assert [p.path for p in err.value.problems] == ["data.hihg"]
