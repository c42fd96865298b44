"""One benchmark variant in one process: ``python bench/worker.py SPEC.json RESULT.json``.

The spec names the variant, the data file, the seed and a scratch folder; the result holds
the epoch timings, the final training loss and what the run cost beyond its epochs. The
parent process (``bench/run.py``) reads the peak memory of this process from ``wait4``.

Both kinds of run get the same ``EpochTimer`` callback, first in the callback list, so
``on_epoch_begin`` -> ``on_epoch_end`` is the training loop alone (kexp's own epoch-end work,
checkpoints, TensorBoard, history, runs after it) and ``on_epoch_begin`` -> next
``on_epoch_begin`` (or ``on_train_end``) is the epoch as the user waits for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_STARTED = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.workloads import Variant, kexp_config  # noqa: E402

__all__ = ["run_variant", "TIMER_NAME"]

# The tuned baseline's `compile(steps_per_execution=...)`.
TUNED_STEPS_PER_EXECUTION = 32
# The name the timer is registered under for kexp configs.
TIMER_NAME = "BenchEpochTimer"


def _timer_class() -> type:
    """The epoch timer (a class made on first use: this module must not import Keras when
    it is imported by the parent process's tests)."""
    global _TIMER
    if _TIMER is not None:
        return _TIMER
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Records when each epoch begins and ends, its logs, and when training ends.

        It has no batch hooks, so it neither syncs per batch nor makes kexp run one batch
        per call.
        """

        instances: list = []

        def __init__(self) -> None:
            super().__init__()
            self.begins: list[float] = []
            self.ends: list[float] = []
            self.logs: list[dict[str, float]] = []
            self.train_begin = self.train_end = 0.0
            self.steps_per_execution = 1
            EpochTimer.instances.append(self)

        def on_train_begin(self, logs=None):
            self.train_begin = time.perf_counter()
            model = getattr(self, "_model", None)
            self.steps_per_execution = int(getattr(model, "steps_per_execution", 1) or 1)

        def on_epoch_begin(self, epoch, logs=None):
            self.begins.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})

        def on_train_end(self, logs=None):
            self.train_end = time.perf_counter()

    _TIMER = EpochTimer
    return EpochTimer


_TIMER: type | None = None


def run_variant(variant: Variant, data_path: Path, num_samples: int, seed: int,
                workdir: Path) -> dict[str, Any]:
    """Train ``variant`` on the arrays in ``data_path``; return its timings and losses.

    Args:
        variant: what to run.
        data_path: the workload's ``.npz`` file.
        num_samples: how many samples it holds.
        seed: the training seed (weights, dropout, data order).
        workdir: scratch space (kexp's config and run directory).

    Returns:
        ``epoch_seconds`` (timed epochs' loops), ``period_seconds`` (timed epochs as the user
        waits for them), ``samples_per_epoch``, ``losses`` (every epoch), ``final_loss``,
        ``steps_per_execution``, ``setup_seconds`` (process start to training start),
        ``finish_seconds`` (training end to return: kexp's final save and metrics).
    """
    from kexp.training.threads import threads_in_use

    if variant.impl in ("plain", "tuned"):
        timer = _run_plain(variant, data_path, tuned=variant.impl == "tuned")
    elif variant.impl == "reference":
        timer = _run_reference(variant, data_path, seed)
    else:
        timer = _run_kexp(variant, data_path, seed, workdir)
    returned = time.perf_counter()
    samples = variant.steps * variant.batch if variant.steps else num_samples
    return {
        **_epoch_times(timer),
        "samples_per_epoch": samples,
        "losses": [logs.get("loss") for logs in timer.logs],
        "final_loss": timer.logs[-1].get("loss") if timer.logs else None,
        "steps_per_execution": timer.steps_per_execution,
        "threads": threads_in_use(),
        "setup_seconds": timer.train_begin - _STARTED,
        "finish_seconds": returned - timer.train_end,
    }


def _epoch_times(timer: Any) -> dict[str, list[float]]:
    """Loop and wall seconds of every epoch after the warm-up one."""
    loops = [end - begin for begin, end in zip(timer.begins, timer.ends, strict=True)]
    marks = [*timer.begins[1:], timer.train_end]
    periods = [after - begin for begin, after in zip(timer.begins, marks, strict=True)]
    return {"epoch_seconds": loops[1:], "period_seconds": periods[1:],
            "warmup_seconds": loops[0] if loops else None}


def _run_plain(variant: Variant, data_path: Path, tuned: bool = False) -> Any:
    """Plain Keras as the chapter writes it: a model function, ``compile``, then
    ``model.fit`` on NumPy arrays with ``batch_size`` and ``epochs``, every default kept.

    ``tuned``: the same script with the three settings any Keras user can set and kexp sets
    for them: ``compile(steps_per_execution=32)``, the thread pools kexp's ``threads: auto``
    picks (set before the model is built), and ``fit(verbose=2)`` (no per-batch progress bar).

    Unseeded, as the chapter's script is: with a global seed (``keras.utils.set_random_seed``)
    Keras 3.15's ``fit`` on arrays repeats the first epoch's sample order in every epoch (the
    shuffle op restarts with each epoch's iterator), which lowers the training loss it reports
    and would make the loss comparison unfair to any loop that reshuffles.
    """
    import keras

    with np.load(data_path) as data:
        arrays = {name: data[name] for name in data.files}
    timer = _timer_class()()
    if variant.workload == "ticket":
        x = [arrays["title"], arrays["text_body"], arrays["tags"]]
        y = [arrays["priority"], arrays["department"]]
        compile_args = {"loss": ["mean_squared_error", "categorical_crossentropy"],
                        "metrics": [["mean_absolute_error"], ["accuracy"]]}
    else:
        x, y = arrays["x"], arrays["y"]
        compile_args = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
    fit_args: dict[str, Any] = {}
    if tuned:
        from kexp.training.threads import configure_threads

        configure_threads("auto", variant.batch, x)
        compile_args["steps_per_execution"] = TUNED_STEPS_PER_EXECUTION
        fit_args["verbose"] = 2
    model = {"mnist": _chapter_mnist_model, "ticket": _chapter_ticket_model,
             "convnet": _convnet_model}[variant.workload](keras)
    model.compile(optimizer="rmsprop", **compile_args)
    model.fit(x, y, batch_size=variant.batch, epochs=variant.epochs, callbacks=[timer],
              steps_per_epoch=variant.steps, **fit_args)
    return timer


def _run_reference(variant: Variant, data_path: Path, seed: int) -> Any:
    """The chapter's ``GradientTape`` loop by hand, the whole epoch in one ``tf.function``
    (no per-step Python at all), reading a ``from_tensor_slices().shuffle().batch()``
    dataset as the chapter does. Not kexp; since kexp's ``custom/epoch`` mode gathers
    in-memory batches inside its epoch function (no ``tf.data`` iterator) it runs faster
    than this loop."""
    import keras
    import tensorflow as tf

    from kexp.training.threads import configure_threads

    keras.utils.set_random_seed(seed)
    with np.load(data_path) as data:
        x, y = data["x"], data["y"]
    # The thread pools kexp's `threads: auto` picks, as kexp's loop runs with.
    configure_threads("auto", variant.batch, x)
    model = _chapter_mnist_model(keras)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    optimizer = keras.optimizers.RMSprop()
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    mean_loss = keras.metrics.Mean()

    def train_step(inputs, targets):
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            loss = loss_fn(targets, predictions)
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights, strict=True))
        accuracy.update_state(targets, predictions)
        # Weighted by the batch size, as fit's loss is (the last batch is partial).
        mean_loss.update_state(loss, sample_weight=tf.shape(targets)[0])

    @tf.function
    def train_epoch(dataset):
        for inputs, targets in dataset:
            train_step(inputs, targets)

    dataset = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
               .batch(variant.batch).prefetch(tf.data.AUTOTUNE))
    timer = _timer_class()()
    timer.on_train_begin()
    for epoch in range(variant.epochs):
        mean_loss.reset_state()
        accuracy.reset_state()
        timer.on_epoch_begin(epoch)
        train_epoch(dataset)
        timer.on_epoch_end(epoch, {"loss": mean_loss.result(), "accuracy": accuracy.result()})
    timer.on_train_end()
    return timer


def _chapter_mnist_model(keras: Any) -> Any:
    """Listing 7.17's ``get_mnist_model()``."""
    inputs = keras.Input(shape=(28 * 28,))
    features = keras.layers.Dense(512, activation="relu")(inputs)
    features = keras.layers.Dropout(0.5)(features)
    outputs = keras.layers.Dense(10, activation="softmax")(features)
    return keras.Model(inputs, outputs)


def _convnet_model(keras: Any) -> Any:
    """The next chapter's small convnet (Listing 8.1's shape) on 28x28x1 images."""
    from bench.workloads import CONVNET_LAYERS

    model = keras.Sequential([keras.Input(shape=(28, 28, 1))], name="convnet")
    for layer in CONVNET_LAYERS:
        args = {k: v for k, v in layer.items() if k != "type"}
        model.add(getattr(keras.layers, layer["type"])(**args))
    return model


def _chapter_ticket_model(keras: Any) -> Any:
    """Listing 7.9's multi-input, multi-output ticket model."""
    from bench.workloads import TICKET_DEPARTMENTS, TICKET_TAGS, TICKET_VOCABULARY

    title = keras.Input(shape=(TICKET_VOCABULARY,), name="title")
    text_body = keras.Input(shape=(TICKET_VOCABULARY,), name="text_body")
    tags = keras.Input(shape=(TICKET_TAGS,), name="tags")
    features = keras.layers.Concatenate()([title, text_body, tags])
    features = keras.layers.Dense(64, activation="relu")(features)
    priority = keras.layers.Dense(1, activation="sigmoid", name="priority")(features)
    department = keras.layers.Dense(TICKET_DEPARTMENTS, activation="softmax",
                                    name="department")(features)
    return keras.Model(inputs=[title, text_body, tags], outputs=[priority, department])


def _run_kexp(variant: Variant, data_path: Path, seed: int, workdir: Path) -> Any:
    """``kexp train`` in-process, as the CLI runs it: load the config, then ``train``."""
    import yaml

    from kexp.config import load_config
    from kexp.registry import CALLBACKS
    from kexp.training.engine import TrainOptions, train

    timer_class = _timer_class()
    if TIMER_NAME not in CALLBACKS.registered():
        CALLBACKS.register(TIMER_NAME)(timer_class)
    config = kexp_config(variant, data_path, workdir / "runs", seed, TIMER_NAME)
    path = workdir / f"{variant.key}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = load_config(path, list(variant.sets))
    timer_class.instances.clear()
    train(cfg, TrainOptions(command=("bench", str(path))))
    return timer_class.instances[-1]


def main(argv: list[str]) -> int:
    """``worker.py SPEC.json RESULT.json``."""
    spec = json.loads(Path(argv[1]).read_text())
    variant = Variant(**{**spec["variant"], "sets": tuple(spec["variant"].get("sets", ()))})
    result = run_variant(variant, Path(spec["data"]),
                         int(spec["num_samples"]), int(spec["seed"]), Path(spec["workdir"]))
    Path(argv[2]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
