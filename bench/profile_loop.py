"""Where the custom loop's time goes: ``python bench/profile_loop.py [--batch 32]``.

Runs an epoch of the chapter's MNIST network (784 -> Dense 512 relu -> Dropout 0.5 -> Dense
10 softmax, rmsprop) the way ``train.loop: custom`` in ``epoch`` mode does -- kexp's input
pipeline, the whole epoch in one ``tf.function`` looping over the iterator
(``kexp.training.custom_loop._make_run_steps``) -- with step bodies that do more and more of
a training step, in one process, interleaved (each repetition runs every body once, in a
rotated order), with the thread pools kexp's ``threads: auto`` picks (``--threads N`` for
others). It prints samples/s (the best and the median epoch) and the process's CPU time per
step (every thread; far less disturbed by other jobs than wall time), so the difference
between two rows is the cost of one part:

- ``input pipeline``: pull the batches, nothing else (the gather runs in tf.data's threads);
- ``+ forward, loss``: the model's forward pass and compiled loss;
- ``+ gradients, 1-pass SGD``: the backward pass, the weights updated by one fused kernel
  each (``ResourceApplyGradientDescent``): backward with the cheapest possible update;
- ``+ RMSprop``: Keras's ``optimizer.apply_gradients`` instead (RMSprop: about ten
  element-wise ops per weight, each a pass over the 784 x 512 kernel);
- ``kexp's train step``: plus the loss tracker and the accuracy metric: what kexp runs;
- ``Keras's train_step``: ``model.train_step``, what ``fit`` runs per step.

(The step's five matmuls alone, without the input pipeline, are ``bench/roofline.py``'s.)

Diagnostic rows (they change the arithmetic, so neither could replace kexp's step, which must
give ``fit``'s results bit for bit): ``RMSprop as one kernel`` (``ResourceApplyRMSProp``,
which rounds differently) and ``RMSprop under XLA`` (``apply_gradients`` in a
``jit_compile`` function; XLA fuses the element-wise ops and contracts multiply-adds).
``--check`` trains one epoch with each update and reports how far the weights end from
Keras's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if __package__ in (None, ""):  # run as a script: make `bench` and `kexp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.workloads import make_mnist_like  # noqa: E402

ALL_STEPS = 2**31 - 1
# The fused RMSprop's own slots (ms, mom) by model id, reset by --check.
_SLOTS: dict[int, list[Any]] = {}


def _model(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(784,))
    features = keras.layers.Dense(512, activation="relu")(inputs)
    features = keras.layers.Dropout(0.5)(features)
    outputs = keras.layers.Dense(10, activation="softmax")(features)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _bodies(tf: Any, keras: Any) -> dict[str, Any]:
    """Step bodies ``body(model) -> step(data)``; each leaves a side effect, so nothing is
    pruned from the graph."""
    from kexp.training import custom_loop

    def handle(variable: Any) -> Any:
        return getattr(variable, "value", variable).handle

    def forward(model: Any, data: Any) -> tuple[Any, Any]:
        x, y = data
        y_pred = model(x, training=True)
        return y_pred, model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)

    def pipeline(model: Any) -> Any:
        return lambda data: None

    def forward_loss(model: Any) -> Any:
        sink = tf.Variable(0.0)

        def step(data: Any) -> None:
            sink.assign_add(forward(model, data)[1])
        return step

    def with_update(update: str) -> Any:
        def body(model: Any) -> Any:
            weights = model.trainable_weights
            slots = ([(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w)))
                      for w in weights] if update == "fused_rmsprop" else [])
            _SLOTS[id(model)] = [v for pair in slots for v in pair]
            jitted = tf.function(
                lambda grads: model.optimizer.apply_gradients(zip(grads, weights,
                                                                  strict=True)),
                jit_compile=True, autograph=False)

            def step(data: Any) -> None:
                with tf.GradientTape() as tape:
                    _, loss = forward(model, data)
                grads = tape.gradient(loss, weights)
                if update == "sgd":
                    for w, g in zip(weights, grads, strict=True):
                        tf.raw_ops.ResourceApplyGradientDescent(var=handle(w), alpha=1e-3,
                                                                delta=g)
                elif update == "fused_rmsprop":
                    for w, g, (ms, mom) in zip(weights, grads, slots, strict=True):
                        tf.raw_ops.ResourceApplyRMSProp(
                            var=handle(w), ms=ms.handle, mom=mom.handle, lr=1e-3, rho=0.9,
                            momentum=0.0, epsilon=1e-7, grad=g)
                elif update == "xla":
                    jitted(grads)
                else:
                    model.optimizer.apply_gradients(zip(grads, weights, strict=True))
            return step
        return body

    def kexp_step(model: Any) -> Any:
        return lambda data: custom_loop._train_step(model, data)

    def keras_step(model: Any) -> Any:
        return lambda data: model.train_step(data)

    return {
        "input pipeline": pipeline,
        "+ forward, loss": forward_loss,
        "+ gradients, 1-pass SGD": with_update("sgd"),
        "+ RMSprop (Keras)": with_update("keras"),
        "kexp's train step": kexp_step,
        "Keras's train_step (fit's)": keras_step,
        "RMSprop as one kernel (other rounding)": with_update("fused_rmsprop"),
        "RMSprop under XLA": with_update("xla"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", default="auto", help="auto (kexp's choice) or N")
    parser.add_argument("--only", default="", help="comma-separated row prefixes to run")
    parser.add_argument("--check", action="store_true",
                        help="compare the weights after one epoch with each RMSprop")
    args = parser.parse_args(argv)

    from kexp.training.threads import configure_threads, threads_in_use

    x, y = make_mnist_like(args.samples, seed=0)
    if args.threads == "auto":
        configure_threads("auto", args.batch, x)
    else:
        configure_threads(int(args.threads), args.batch)
    import keras
    import tensorflow as tf

    from kexp.data.pipeline import train_dataset
    from kexp.data.splits import Split
    from kexp.training import _keras_private as private
    from kexp.training.custom_loop import _make_run_steps

    split = Split(x, y)

    def dataset() -> Any:
        return train_dataset(split, batch_size=args.batch, seed=0, epochs=1)[0]

    bodies = _bodies(tf, keras)
    if args.only:
        wanted = args.only.split(",")
        bodies = {k: v for k, v in bodies.items() if any(k.startswith(w) for w in wanted)}
    runners, initial = {}, {}
    for name, body in bodies.items():
        model = _model(keras)
        private.symbolic_build(model, dataset().element_spec, None)
        runners[name] = (model, tf.function(_make_run_steps(model, body(model)),
                                            autograph=False))
        initial[name] = [v.numpy() for v in _state(model)]

    def epoch(name: str) -> tuple[float, float]:
        """Wall and CPU seconds (every thread of the process) of one epoch."""
        _, run = runners[name]
        iterator = iter(dataset())
        start, cpu = time.perf_counter(), time.process_time()
        steps, _ = run(iterator, tf.constant(ALL_STEPS))
        int(steps)
        return time.perf_counter() - start, time.process_time() - cpu

    for name in runners:  # trace and warm up
        epoch(name)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(args.reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(epoch(name))

    steps = -(-args.samples // args.batch)
    print(f"batch {args.batch}, {args.samples} samples ({steps} steps per epoch), "
          f"threads per pool: {threads_in_use()}, {args.reps} epochs each, interleaved; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("samples/s: the best and the median epoch; CPU us/step: the process's CPU time "
          "(every thread) per step, median; 'adds': over the row before")
    print(f"{'step body':<40} {'best/s':>9} {'median/s':>9} {'CPU us/step':>11} {'adds':>6}")
    previous = None
    for name, runs in times.items():
        walls = [wall for wall, _ in runs]
        per_step = statistics.median(cpu for _, cpu in runs) / steps * 1e6
        adds = "" if previous is None or not name.startswith("+") else \
            f"{per_step - previous:+.0f}"
        print(f"{name:<40} {args.samples / min(walls):>9,.0f} "
              f"{args.samples / statistics.median(walls):>9,.0f} {per_step:>11.0f} {adds:>6}")
        if name.startswith("+") or name == "input pipeline":
            previous = per_step
    if args.check:
        _check(runners, initial, dataset, tf)
    return 0


def _state(model: Any) -> list[Any]:
    """Every variable of a runner: weights, optimizer, seeds, metrics, fused slots."""
    return [*model.variables, *model.optimizer.variables, *_SLOTS.get(id(model), [])]


def _check(runners: dict[str, Any], initial: dict[str, list[Any]], dataset: Any,
           tf: Any) -> None:
    """One more epoch from the initial state for Keras's RMSprop and each alternative; how far
    the weights end from Keras's."""
    ends = {}
    for name in ("+ RMSprop (Keras)", "RMSprop as one kernel (other rounding)",
                 "RMSprop under XLA", "kexp's train step", "Keras's train_step (fit's)"):
        if name not in runners:
            continue
        model, run = runners[name]
        for variable, value in zip(_state(model), initial[name], strict=True):
            variable.assign(value)
        run(iter(dataset()), tf.constant(ALL_STEPS))
        ends[name] = [w.numpy() for w in model.trainable_weights]
    base = ends.pop("+ RMSprop (Keras)", None)
    if base is None:
        return
    for name, weights in ends.items():
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, base, strict=True))
        same = all(np.array_equal(a, b) for a, b in zip(weights, base, strict=True))
        print(f"after one epoch, {name}: {'bit-identical' if same else 'differs'} to Keras's "
              f"RMSprop step (max |diff| {diff:.3g})")


if __name__ == "__main__":
    sys.exit(main())
