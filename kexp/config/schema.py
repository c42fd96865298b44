"""The config language as typed objects (pydantic v2).

A config is validated once, here, at the edge; everything downstream receives these objects.
Components (layers, optimizers, losses, ...) are written one way everywhere: a bare name, or a
mapping of ``type`` plus keyword arguments::

    optimizer: rmsprop
    optimizer: {type: RMSprop, learning_rate: 1e-3}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from kexp.config.load import parse_path

__all__ = [
    "Component",
    "Node",
    "InputSpec",
    "ModelSpec",
    "FreezeSpec",
    "UnfreezeSpec",
    "DataSpec",
    "DATA_OPTIONS",
    "CompileSpec",
    "TrainSpec",
    "PhaseSpec",
    "DistributeSpec",
    "SweepSpec",
    "Config",
    "UNION_TAGS",
]


class Section(BaseModel):
    """A fixed set of keys: anything else is an error. Types are strict (``"3"`` is no int)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


class Component(BaseModel):
    """``Name`` or ``{type: Name, **kwargs}``: a registered or Keras class / function and its
    keyword arguments (``args``). ``path`` and ``where`` locate it in the config, for errors
    raised while building it."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    _path: str = PrivateAttr(default="")
    _where: str = PrivateAttr(default="")
    _sources: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return _component_value(value)

    @property
    def args(self) -> dict[str, Any]:
        """The keyword arguments given with ``type``."""
        return dict(self.model_extra or {})

    @property
    def path(self) -> str:
        return self._path

    @property
    def where(self) -> str:
        return self._where

    def locate(self, path: str, where: str, sources: Any = None) -> None:
        self._path, self._where, self._sources = path, where, sources

    def where_of(self, key: str) -> str:
        """Where one of this component's keys (``units``, ``kernel_regularizer.l2``) was
        written (``file:line:col``), else where the component was."""
        if self._sources is None or not self._path:
            return self._where
        try:
            path = (*parse_path(self._path), *parse_path(key))
        except ValueError:
            return self._where
        return self._sources.where(path) or self._where


def _component_value(value: Any) -> Any:
    """A component as a mapping: a bare name is ``{type: name}``; anything else is refused."""
    if isinstance(value, str):
        return {"type": value}
    if isinstance(value, dict) and "type" not in value:
        raise ValueError(
            "a component needs a `type:` naming what to build, e.g. {type: Dense, units: 64}"
        )
    if not isinstance(value, dict):
        raise ValueError(
            "expected a name (e.g. rmsprop) or a mapping with `type:` "
            "(e.g. {type: RMSprop, learning_rate: 1e-3})"
        )
    return value


class Node(Component):
    """A layer in a sequential or functional model.

    ``inputs`` names the node(s) this layer is called on (functional only; default: the
    previous layer). ``adapt: true`` adapts a preprocessing layer (``Normalization``) on the
    training features before training.

    ``call: encoder`` instead of ``type:`` calls the layer of an earlier node again, on this
    node's ``inputs`` (functional only): the Functional API's shared layers, one set of
    weights. Such a node builds no layer, so it takes no ``type`` and no layer arguments; its
    ``name`` names the graph node (its output), for ``inputs:`` and ``outputs:``.

    ``type: sequential`` with ``layers:`` is a block: a ``keras.Sequential`` of those layers, one
    node of the graph (to call again as a whole, e.g. a Siamese encoder).

    Example:
        ```yaml
        - {name: encoder, type: Dense, units: 8, inputs: left}
        - {call: encoder, inputs: right, name: right_vec}   # the same Dense, on `right`
        ```
    """

    type: str | None = None  # None only in a `call:` node
    call: str | None = None
    inputs: str | list[str] | None = None
    adapt: bool = False
    layers: list[Node] | None = None  # a `type: sequential` block's layers

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "call" in value:
            return value  # a shared-layer node; kexp.config.check reports `type` beside it
        if isinstance(value, dict) and value.get("type") is None:
            raise ValueError("a layer needs a `type:` naming what to build, e.g. {type: Dense, "
                             "units: 64}, or `call:` naming an earlier layer to call again")
        return _component_value(value)


class InputSpec(Section):
    """A named model input: ``{name: title, shape: [10000]}``."""

    name: str
    shape: list[PositiveInt | None]
    dtype: str = "float32"


class FreezeSpec(Section):
    """``freeze: {layer: backbone, until: block_12_add}``: freeze a layer (with ``until``:
    its sublayers from the first through that one)."""

    layer: str
    until: str | None = None


class UnfreezeSpec(Section):
    """``unfreeze: {layer: backbone, from: block_13_expand}``: make a layer trainable (with
    ``from``: its sublayers from that one to the last). BatchNormalization sublayers stay
    frozen (in inference mode) unless ``batchnorm: true``."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False,
                              populate_by_name=True)

    layer: str
    from_: str | None = Field(default=None, alias="from")
    batchnorm: bool = False


def _one_or_list(v: Any) -> str:
    return "~list" if isinstance(v, list) else "~one"


_Freeze = Annotated[Annotated[FreezeSpec, Tag("~one")] | Annotated[list[FreezeSpec], Tag("~list")],
                    Discriminator(_one_or_list)]
_Unfreeze = Annotated[
    Annotated[UnfreezeSpec, Tag("~one")] | Annotated[list[UnfreezeSpec], Tag("~list")],
    Discriminator(_one_or_list)]


class ModelSpec(Component):
    """``type: sequential``, ``type: functional``, or a registered model / layer class with its
    keyword arguments (``{type: CustomerTicketModel, num_departments: 4}``)."""

    name: str | None = None
    input_shape: list[PositiveInt | None] | None = None
    inputs: list[InputSpec] | None = None
    layers: list[Node] | None = None
    outputs: str | list[str] | None = None
    class_: str | None = Field(default=None, alias="class")
    base: str | None = None
    checkpoint: Literal["final", "best", "last"] | None = None
    trainable: bool | None = None
    freeze: _Freeze | None = None
    unfreeze: _Unfreeze | None = None

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    @property
    def kind(self) -> str:
        """``sequential``, ``functional`` or ``class`` (a registered class)."""
        return self.type if self.type in ("sequential", "functional") else "class"


class DataSpec(Component):
    """A dataset component plus the options every dataset shares.

    Example:
        ```yaml
        data: {type: digits, batch_size: 32, validation_split: 0.2}
        ```
    """

    batch_size: PositiveInt = 32
    validation_split: Annotated[float, Field(gt=0, lt=1)] | None = None
    validation: Component | None = None
    test: Component | None = None
    shuffle: bool | PositiveInt = True
    cache: bool | str = False
    prefetch: bool | PositiveInt = True


# The keys of ``data:`` that kexp handles itself; the others are the dataset's own arguments.
DATA_OPTIONS = tuple(name for name in DataSpec.model_fields if name != "type")


def _shape_of(value: Any) -> str:
    if isinstance(value, list):
        return "~list"
    if isinstance(value, dict) and "type" not in value:
        return "~map"
    return "~one"


# Discriminated by shape, so a bad value gets one error, not one per union member. The tags
# appear in pydantic's error locations; kexp.config.errors removes them from config paths.
UNION_TAGS = ("~one", "~list", "~map", "~float", "~int", "~categorical")
_OneOrList = Annotated[
    Annotated[Component, Tag("~one")] | Annotated[list[Component], Tag("~list")],
    Discriminator(_shape_of),
]
_Losses = Annotated[
    Annotated[Component, Tag("~one")]
    | Annotated[list[Component], Tag("~list")]
    | Annotated[dict[str, Component], Tag("~map")],
    Discriminator(_shape_of),
]
_Metrics = Annotated[
    Annotated[Component, Tag("~one")]
    | Annotated[list[_OneOrList], Tag("~list")]
    | Annotated[dict[str, _OneOrList], Tag("~map")],
    Discriminator(_shape_of),
]
_Weights = Annotated[
    Annotated[list[float], Tag("~list")] | Annotated[dict[str, float], Tag("~map")],
    Discriminator(lambda v: "~list" if isinstance(v, list) else "~map"),
]


class CompileSpec(Section):
    """Arguments of ``model.compile``: one value, a list in output order, or a mapping keyed
    by output name."""

    optimizer: Component = Component(type="rmsprop")
    loss: _Losses | None = None
    loss_weights: _Weights | None = None
    metrics: _Metrics | None = None
    # Keras's `weighted_metrics`: metrics weighed by the sample (or class) weights.
    weighted_metrics: _Metrics | None = None
    steps_per_execution: PositiveInt | Literal["auto"] = "auto"
    jit_compile: bool | Literal["auto"] = False


class ProfileSpec(Section):
    """``train.profile: {start_step: 10, end_step: 20}``: a ``tf.profiler`` trace of those
    training steps in the run's ``logs/`` (TensorBoard's Profile tab, with
    ``tensorboard-plugin-profile``). Steps count as Keras's ``TensorBoard(profile_batch=...)``
    counts them, from 1, one per batch-hook call: one per executed chunk of
    ``steps_per_execution`` batches in ``fit``, one per batch in ``step``/``eager`` mode,
    one per epoch in the custom loop's ``epoch`` mode."""

    start_step: PositiveInt
    end_step: PositiveInt

    @model_validator(mode="after")
    def _check_order(self):
        if self.end_step < self.start_step:
            raise ValueError(f"end_step must not be before start_step; received "
                             f"start_step={self.start_step}, end_step={self.end_step}")
        return self


class PhaseSpec(Section):
    """One training phase: its epochs, what it (un)freezes first, its optimizer (default:
    ``compile.optimizer``, new for the phase) and callbacks (default: ``train.callbacks``).

    Example:
        ```yaml
        - {epochs: 10, unfreeze: {layer: backbone, from: block_13_expand},
           optimizer: {type: Adam, learning_rate: 1.0e-5}}
        ```
    """

    epochs: PositiveInt
    freeze: _Freeze | None = None
    unfreeze: _Unfreeze | None = None
    optimizer: Component | None = None
    callbacks: list[Component] | None = None


# ``{0: 1.0, 1: 5.0}`` (class index: weight >= 0) or ``balanced``.
_ClassWeight = Annotated[
    Annotated[dict[int, Annotated[float, Field(ge=0)]], Tag("~map")]
    | Annotated[Literal["balanced"], Tag("~one")],
    Discriminator(lambda v: "~map" if isinstance(v, dict) else "~one"),
]


class TrainSpec(Section):
    """How to train: the loop, its length, callbacks, and the artifacts kexp adds.

    With ``phases:``, ``epochs`` is the phases' total (set from them when not given).
    """

    loop: Literal["fit", "custom"] = "fit"
    epochs: PositiveInt = 1
    steps_per_epoch: PositiveInt | None = None
    compile_mode: Literal["eager", "step", "epoch"] = "epoch"
    callbacks: list[Component] = []
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    checkpoints: bool = True
    tensorboard: bool = True
    progress: bool = True
    threads: NonNegativeInt | Literal["auto"] = "auto"
    profile: ProfileSpec | None = None
    phases: Annotated[list[PhaseSpec], Field(min_length=1)] | None = None
    class_weight: _ClassWeight | None = None

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_indices(cls, value: Any) -> Any:
        """Keys written as text (``--set train.class_weight.1=5``, a JSON round trip) are
        class indices too."""
        if isinstance(value, dict):
            return {int(k) if isinstance(k, str) and k.strip().isdigit() else k: v
                    for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _profile_needs_tensorboard(self):
        if self.profile is not None and not self.tensorboard:
            raise ValueError("profile writes its trace beside the TensorBoard logs; it needs "
                             "tensorboard: true")
        return self

    @model_validator(mode="after")
    def _total_epochs(self) -> TrainSpec:
        if self.phases is None:
            return self
        if "epochs" not in self.model_fields_set:  # given and different: kexp.config.check
            self.epochs = sum(phase.epochs for phase in self.phases)
        return self


class DistributeSpec(Section):
    """``tf.distribute`` strategy: default, mirrored (one machine, several devices) or
    multi_worker (several processes / machines; custom loop)."""

    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    devices: list[str] | None = None
    communication: Literal["auto", "ring", "nccl"] = "auto"


class _Range(Section):
    """``low``..``high`` (both included), optionally on a log scale or in steps."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check_range(self):
        if self.low > self.high:
            raise ValueError(f"low must not exceed high; received low={self.low}, "
                             f"high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0; received low={self.low}")
        if self.log and getattr(self, "step", None) is not None:
            raise ValueError("log and step cannot be combined (Optuna samples one or the other)")
        return self


class FloatParam(_Range):
    """``{type: float, low: 1.0e-4, high: 1.0e-1, log: true}``; ``step`` makes it discrete."""

    type: Literal["float"]
    low: float
    high: float
    step: Annotated[float, Field(gt=0)] | None = None

    model_config = ConfigDict(extra="forbid", strict=False, validate_default=False)


class IntParam(_Range):
    """``{type: int, low: 16, high: 256, log: true}``, or ``step`` for every n-th value."""

    type: Literal["int"]
    low: int
    high: int
    step: PositiveInt | None = None


class CategoricalParam(Section):
    """``{type: categorical, choices: [adam, rmsprop]}``: any YAML values, components too."""

    type: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]


def _param_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"~{kind}" if kind in ("float", "int", "categorical") else None


_Param = Annotated[
    Annotated[FloatParam, Tag("~float")] | Annotated[IntParam, Tag("~int")]
    | Annotated[CategoricalParam, Tag("~categorical")],
    Discriminator(_param_kind, custom_error_type="sweep_param_type",
                  custom_error_message="expected a parameter {type: float | int | categorical, "
                  "...}"),
]


class SweepSpec(Section):
    """A search over config values (``kexp sweep``; ``kexp train`` ignores it).

    Example:
        ```yaml
        sweep:
          metric: val_accuracy
          trials: 12
          sampler: tpe
          pruner: median
          jobs: 2
          params:
            compile.optimizer.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
            model.layers[0].units: {type: int, low: 16, high: 256, log: true}
        ```
    """

    metric: str = "val_loss"
    direction: Literal["minimize", "maximize"] | None = None
    trials: PositiveInt = 10
    sampler: Component = Component(type="tpe")
    pruner: Component = Component(type="none")
    jobs: PositiveInt = 1
    params: Annotated[dict[str, _Param], Field(min_length=1)]


class Config(Section):
    """A whole experiment."""

    name: str | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    deterministic: bool = False
    plugins: list[str] = []
    runs_dir: str = "runs"
    data: DataSpec | None = None  # a model-only config: validate, summary, plot; not train
    model: ModelSpec
    compile: CompileSpec = CompileSpec()
    train: TrainSpec = TrainSpec()
    distribute: DistributeSpec = DistributeSpec()
    sweep: SweepSpec | None = None

    _file: Path | None = PrivateAttr(default=None)
    _sources: Any = PrivateAttr(default=None)

    @property
    def file(self) -> Path | None:
        """The config file this was loaded from."""
        return self._file

    @property
    def sources(self) -> Any:
        """The ``SourceMap`` of the loaded YAML (where each value came from)."""
        return self._sources

    def where(self, path: str) -> str:
        """Where the value at config path ``path`` (``compile.steps_per_execution``) was
        written: ``file:line:col``, the ``--set`` that gave it, or its closest ancestor's
        place; '' when unknown."""
        if self._sources is None:
            return ""
        try:
            return self._sources.where(parse_path(path)) or ""
        except ValueError:
            return ""

    def run_name(self) -> str:
        """``name:``, else the config file's stem."""
        return self.name or (self._file.stem if self._file else "run")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config as plain data: defaults filled in, rerunnable as is (with
        ``train.phases``, ``train.epochs`` is left out: it is their total)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if self.train.phases:
            data["train"].pop("epochs", None)
        if isinstance(self.train.class_weight, dict):  # JSON made the class indices text
            data["train"]["class_weight"] = dict(self.train.class_weight)
        return data
