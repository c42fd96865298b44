"""kexp/registry.py: registration, resolution order, signatures."""

from __future__ import annotations

import json

import pytest

from kexp.registry import CALLBACKS, LAYERS, METRICS, OPTIMIZERS, Registry, signature_of


@pytest.fixture
def registry():
    return Registry("widget")


def test_register_under_own_or_given_name(registry):
    @registry.register()
    def make_widget(size: int, color: str = "red"):
        return size

    @registry.register("tiny")
    class Tiny:
        def __init__(self, scale=1.0):
            self.scale = scale

    entry = registry.get("make_widget")
    assert entry.origin == "plugin" and entry.params == ("size", "color")
    assert entry.required == ("size",)
    assert registry.get("tiny").obj is Tiny
    assert registry.get("nothing") is None


def test_a_name_is_registered_once_and_the_error_names_the_first_owner(registry):
    @registry.register("w")
    def first():
        pass

    with pytest.raises(ValueError, match=r"'w' is already registered by .*test_registry"):
        @registry.register("w")
        def second():
            pass


def test_registered_names_come_before_keras(monkeypatch):
    # LogCoshError: a Keras metric no plugin of the suite registers (the chapter's plugin
    # registers RootMeanSquaredError, and an earlier test may have imported it).
    class LogCoshError:  # shadows keras.metrics.LogCoshError
        def __init__(self, name="logcosh"):
            pass

    assert METRICS.get("LogCoshError").origin == "keras"
    METRICS.register()(LogCoshError)
    try:
        assert METRICS.get("LogCoshError").obj is LogCoshError
    finally:
        METRICS.unregister("LogCoshError")
    assert METRICS.get("LogCoshError").origin == "keras"


def test_keras_names_and_identifiers_resolve_without_tensorflow():
    assert LAYERS.get("Dense").required == ("units",)
    assert "name" in LAYERS.get("Dense").params  # keras.layers.Layer's keyword arguments
    assert OPTIMIZERS.get("rmsprop").identifier
    assert not OPTIMIZERS.get("RMSprop").open_kwargs
    assert METRICS.get("accuracy").identifier
    assert CALLBACKS.get("EarlyStopping").params[:2] == ("monitor", "min_delta")
    assert "Dense" in LAYERS.suggest("Dens")


def test_signature_follows_kwargs_up_to_a_closed_base():
    class Base:
        def __init__(self, a, b=2):
            pass

    class Child(Base):
        def __init__(self, c=3, **kwargs):
            super().__init__(**kwargs)

    params, required, open_kwargs = signature_of(Child)
    assert params == ("c", "a", "b") and required == () and not open_kwargs


def test_catalog_matches_the_installed_keras():
    """The shipped catalog is what `make catalog` writes for the installed Keras."""
    from kexp.tools.keras_catalog import CATALOG_PATH, build_catalog

    shipped = json.loads(CATALOG_PATH.read_text())
    assert shipped == json.loads(json.dumps(build_catalog()))
