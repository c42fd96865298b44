"""kexp/config/load.py: safe YAML with source marks, extends, --set."""

from __future__ import annotations

import pytest

from kexp.config.load import apply_sets, format_path, load_merged, parse_path
from kexp.errors import ConfigError


def test_floats_in_exponent_notation_are_floats(write):
    path = write("c.yaml", "a: 1e-3\nb: 5E+2\nc: 10\nd: '1e-3'\ne: 1.5\n")
    data = load_merged(path).data
    assert data == {"a": 0.001, "b": 500.0, "c": 10, "d": "1e-3", "e": 1.5}
    assert isinstance(data["c"], int)


def test_every_value_remembers_its_line(write):
    path = write("c.yaml", """
        model:
          layers:
            - {type: Dense, units: 64}
            - {type: Dense, units: 10}
        """)
    sources = load_merged(path).sources
    assert sources.where(("model", "layers", 1, "units")).endswith("c.yaml:4:21")
    assert sources.where(("model", "layers", 0)).endswith("c.yaml:3:7")


def test_duplicate_keys_are_an_error_with_both_lines(write):
    path = write("c.yaml", "train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError) as err:
        load_merged(path)
    text = str(err.value)
    assert "duplicate key 'epochs'" in text and "c.yaml:3:3" in text and "c.yaml:2:3" in text


@pytest.mark.parametrize("text", [
    "a: !!python/object/apply:os.system ['echo hi']\n",
    "a: !!python/name:os.system\n",
    "a: !custom 3\n",
])
def test_python_tags_are_refused(write, text):
    path = write("c.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_merged(path)
    assert "c.yaml:1:" in str(err.value) and "not allowed" in str(err.value)


def test_tabs_and_malformed_yaml_point_at_the_line(write):
    path = write("c.yaml", "train:\n\tepochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_merged(path)
    assert "c.yaml:2:" in str(err.value) and "tab" in str(err.value).lower()
    path = write("d.yaml", "a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match=r"d.yaml:\d+:\d+: invalid YAML"):
        load_merged(path)


def test_extends_deep_merges_and_the_extending_file_wins(write):
    write("base.yaml", """
        seed: 1
        train: {epochs: 3, loop: fit}
        compile: {metrics: [accuracy, mae]}
        """)
    path = write("sub/child.yaml", """
        extends: ../base.yaml
        train: {epochs: 5}
        compile: {metrics: [accuracy]}
        """)
    loaded = load_merged(path)
    assert loaded.data == {"seed": 1, "train": {"epochs": 5, "loop": "fit"},
                           "compile": {"metrics": ["accuracy"]}}
    assert loaded.sources.where(("train", "epochs")).endswith("child.yaml:2:9")
    assert loaded.sources.where(("train", "loop")).endswith("base.yaml:2:20")


def test_extends_a_list_and_relative_data_paths(write, tmp_path):
    write("a.yaml", "data: {type: npz, path: data/x.npz}\n")
    write("b.yaml", "seed: 2\n")
    path = write("nested/c.yaml", "extends: [../a.yaml, ../b.yaml]\n")
    data = load_merged(path).data
    assert data["seed"] == 2
    assert data["data"]["path"] == str((tmp_path / "data" / "x.npz").resolve())


def test_extends_cycle_and_missing_file(write):
    write("a.yaml", "extends: b.yaml\n")
    path = write("b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_merged(path)
    path = write("c.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_merged(path)
    assert "c.yaml:1:1" in str(err.value) and "nowhere.yaml" in str(err.value)


def test_set_overrides_with_yaml_values(write):
    path = write("c.yaml", """
        model: {layers: [{type: Dense, units: 64}, {type: Dense, units: 10}]}
        compile: {metrics: [mae]}
        """)
    loaded = load_merged(path)
    apply_sets(loaded, ["model.layers[0].units=32", "compile.metrics=[accuracy, mae]",
                        "train.epochs=1e1", "model.layers[-1].units=3"])
    assert loaded.data["model"]["layers"][0]["units"] == 32
    assert loaded.data["model"]["layers"][1]["units"] == 3
    assert loaded.data["compile"]["metrics"] == ["accuracy", "mae"]
    assert loaded.data["train"]["epochs"] == 10.0
    assert loaded.sources.where(("model", "layers", 0, "units")) == "--set model.layers[0].units=32"


@pytest.mark.parametrize("override, message", [
    ("model.layers[5].units=3", "has 2 item(s)"),
    ("model.layers.units=3", "not a mapping"),
    ("nonsense", "PATH=VALUE"),
    ("model..x=1", "cannot read"),
])
def test_set_paths_that_do_not_exist(write, override, message):
    path = write("c.yaml", "model: {layers: [{type: Dense}, {type: Dense}]}\n")
    loaded = load_merged(path)
    with pytest.raises(ConfigError) as err:
        apply_sets(loaded, [override])
    assert message in str(err.value) and "--set" in str(err.value)


def test_paths_round_trip():
    path = ("model", "layers", 2, "units")
    assert format_path(path) == "model.layers[2].units"
    assert parse_path("model.layers[2].units") == path


def test_a_data_cache_file_is_relative_to_the_config_and_memory_is_not_a_file(write, tmp_path):
    path = write("nested/c.yaml", "data: {type: csv, path: x.csv, stream: true, cache: c/t}\n")
    assert load_merged(path).data["data"]["cache"] == str((tmp_path / "nested/c/t").resolve())
    path = write("nested/m.yaml", "data: {type: csv, path: x.csv, cache: memory}\n")
    assert load_merged(path).data["data"]["cache"] == "memory"
