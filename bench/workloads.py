"""What the benchmark trains: seeded synthetic data, the variants, and their kexp configs.

Two workloads, both written to ``.npz`` files that kexp reads with its ``npz`` dataset and the
plain-Keras baseline reads with ``np.load``, so both train on the same arrays:

- ``mnist``: MNIST-shaped data (``x`` ``(n, 784)`` float32 in [0, 1], ``y`` int labels 0..9)
  for the chapter's network (Listing 7.17: Dense 512 relu -> Dropout 0.5 -> Dense 10 softmax,
  rmsprop, sparse categorical crossentropy, accuracy).
- ``ticket``: the chapter's customer-support tickets (Listings 7.9-7.10: inputs ``title``,
  ``text_body`` (10,000 wide), ``tags`` (100); outputs ``priority`` and ``department``).

Labels are functions of the inputs, so the networks learn and the final losses mean
something.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Variant",
    "make_mnist_like",
    "make_tickets",
    "kexp_config",
    "MNIST_LAYERS",
    "CONVNET_LAYERS",
]

# The chapter's MNIST network, as kexp config layers (the baseline builds the same in Python).
MNIST_LAYERS = [
    {"type": "Dense", "units": 512, "activation": "relu"},
    {"type": "Dropout", "rate": 0.5},
    {"type": "Dense", "units": 10, "activation": "softmax"},
]
# The next chapter's small convnet (Listing 8.1's Conv2D / MaxPooling2D stack) on 28x28x1.
CONVNET_LAYERS = [
    {"type": "Conv2D", "filters": 32, "kernel_size": 3, "activation": "relu"},
    {"type": "MaxPooling2D", "pool_size": 2},
    {"type": "Conv2D", "filters": 64, "kernel_size": 3, "activation": "relu"},
    {"type": "MaxPooling2D", "pool_size": 2},
    {"type": "Conv2D", "filters": 128, "kernel_size": 3, "activation": "relu"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 10, "activation": "softmax"},
]
TICKET_VOCABULARY, TICKET_TAGS, TICKET_DEPARTMENTS = 10_000, 100, 4


@dataclass(frozen=True)
class Variant:
    """One measured configuration.

    Attributes:
        name: the row label (``plain fit``, ``kexp fit``, ``kexp custom/epoch`` ...).
        impl: ``plain`` (Keras ``model.fit`` on NumPy arrays, every default), ``tuned``
            (the same with ``steps_per_execution=32``, kexp's thread setting and
            ``verbose=2``), ``kexp`` (``kexp train``) or
            ``reference`` (a hand-written ``GradientTape`` loop, the whole epoch in one
            ``tf.function``, over a ``from_tensor_slices`` dataset, not kexp).
        workload: ``mnist``, ``convnet`` (the same data as 28x28x1 images) or ``ticket``.
        batch: batch size.
        loop: kexp's ``train.loop`` (``fit`` or ``custom``).
        compile_mode: kexp's ``train.compile_mode`` for the custom loop.
        steps: batches per epoch when measuring on a subset (eager mode), else None (all).
        epochs: epochs per run; the first is the warm-up and is not timed.
        sets: kexp ``--set PATH=VALUE`` overrides (for diagnostic variants).
    """

    name: str
    impl: str
    workload: str
    batch: int
    loop: str = "fit"
    compile_mode: str = "epoch"
    steps: int | None = None
    epochs: int = 3
    sets: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A file-name-safe id, unique within a benchmark."""
        return f"{self.workload}-b{self.batch}-{self.name}".replace(" ", "_").replace("/", "-")

    @property
    def is_baseline(self) -> bool:
        """The default (``plain``) or the tuned plain-Keras baseline."""
        return self.impl in ("plain", "tuned")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> Variant:
        return replace(self, **changes)


def make_mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped data: ``x`` ``(n, 784)`` float32 in [0, 1], ``y`` int64 labels 0..9.

    Each image is one of ten sparse random "stroke" masks at a random intensity, blurred by
    noise; its label is the mask it correlates with most, computed from the noisy image
    itself, so the label is a (learnable) function of ``x``; the noise relabels about 9% of
    the images, so some are ambiguous, as real handwriting is. The chapter's network
    reaches about 95% training accuracy in three epochs, as it does on MNIST.
    """
    rng = np.random.default_rng(seed)
    masks = (rng.random((10, 784)) < 0.12).astype(np.float32)
    drawn = rng.integers(0, 10, size=n)
    intensity = rng.uniform(0.3, 1.0, size=(n, 1)).astype(np.float32)
    x = masks[drawn] * intensity + rng.standard_normal((n, 784), dtype=np.float32)
    np.clip(x, 0.0, 1.0, out=x)
    centred = masks - masks.mean(axis=0)
    y = np.argmax(x @ centred.T, axis=1).astype(np.int64)
    return x, y


def make_tickets(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The chapter's ticket arrays (binary bag-of-words inputs), with targets that depend on
    the tags: ``priority`` in (0, 1) ``(n, 1)`` and one-hot ``department`` ``(n, 4)``.

    The chapter draws every input bit at random (half the vocabulary in every ticket); here a
    ticket holds about 2% of the vocabulary and 10% of the tags, as text does, which makes
    the final loss far less seed-dependent. The model computes the same dense products
    either way, so the timings do not depend on it.
    """
    rng = np.random.default_rng(seed)

    def binary(width: int, density: float) -> np.ndarray:
        return (rng.random((n, width), dtype=np.float32) < density).astype(np.float32)

    title, text_body = binary(TICKET_VOCABULARY, 0.02), binary(TICKET_VOCABULARY, 0.02)
    tags = binary(TICKET_TAGS, 0.1)
    weights = rng.standard_normal((TICKET_TAGS, 1 + TICKET_DEPARTMENTS)).astype(np.float32)
    scores = (tags - 0.1) @ weights / np.sqrt(TICKET_TAGS * 0.1)
    priority = (1 / (1 + np.exp(-scores[:, :1]))).astype(np.float32)
    department = np.eye(TICKET_DEPARTMENTS, dtype=np.float32)[np.argmax(scores[:, 1:], axis=1)]
    return {"title": title, "text_body": text_body, "tags": tags,
            "priority": priority, "department": department}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` (uncompressed: loading is then a plain read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def kexp_config(variant: Variant, data_path: Path, runs_dir: Path, seed: int,
                timer: str) -> dict[str, Any]:
    """The kexp config of a variant, as a user would write it, plus the epoch timer callback
    (``timer``: its registered name). Every kexp default stays on: TensorBoard, checkpoints,
    history, progress."""
    train: dict[str, Any] = {"loop": variant.loop, "epochs": variant.epochs,
                             "callbacks": [{"type": timer}]}
    if variant.loop == "custom":
        train["compile_mode"] = variant.compile_mode
    if variant.steps:
        train["steps_per_epoch"] = variant.steps
    config: dict[str, Any] = {
        "name": f"bench-{variant.key}",
        "seed": seed,
        "runs_dir": str(runs_dir),
        "train": train,
    }
    if variant.workload in ("mnist", "convnet"):
        config["data"] = {"type": "npz", "path": str(data_path), "features": "x",
                          "targets": "y", "batch_size": variant.batch}
        config["model"] = ({"type": "sequential", "name": "mnist_mlp", "input_shape": [784],
                            "layers": MNIST_LAYERS} if variant.workload == "mnist" else
                           {"type": "sequential", "name": "convnet", "input_shape": [28, 28, 1],
                            "layers": CONVNET_LAYERS})
        config["compile"] = {"optimizer": "rmsprop", "loss": "sparse_categorical_crossentropy",
                             "metrics": ["accuracy"]}
    else:
        config["data"] = {"type": "npz", "path": str(data_path),
                          "features": ["title", "text_body", "tags"],
                          "targets": ["priority", "department"], "batch_size": variant.batch}
        config["model"] = {
            "type": "functional",
            "name": "ticket_model",
            "inputs": [{"name": "title", "shape": [TICKET_VOCABULARY]},
                       {"name": "text_body", "shape": [TICKET_VOCABULARY]},
                       {"name": "tags", "shape": [TICKET_TAGS]}],
            "layers": [
                {"type": "Concatenate", "name": "concat",
                 "inputs": ["title", "text_body", "tags"]},
                {"type": "Dense", "units": 64, "activation": "relu", "name": "features"},
                {"type": "Dense", "units": 1, "activation": "sigmoid", "name": "priority",
                 "inputs": "features"},
                {"type": "Dense", "units": TICKET_DEPARTMENTS, "activation": "softmax",
                 "name": "department", "inputs": "features"},
            ],
            "outputs": ["priority", "department"],
        }
        config["compile"] = {"optimizer": "rmsprop",
                             "loss": ["mean_squared_error", "categorical_crossentropy"],
                             "metrics": [["mean_absolute_error"], ["accuracy"]]}
    return config
