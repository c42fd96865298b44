"""This CPU's matmul roofline, for the chapter's MNIST network: ``python bench/roofline.py``.

Prints one JSON object (``make bench`` runs it twice, in its own processes: with
TensorFlow's default thread pools and with the one thread per pool that kexp's
``threads: auto`` picks at batch 32 on 2 cores):

- ``peak_gflops``: float32 GFLOP/s of a large square matmul (``N x N`` by ``N x N``,
  ``2 N**3`` flops, N = 2048) run back to back: the most matmul work this CPU does per second
  with these thread pools. The best of a few one-second windows.
- ``mlp_flops_per_sample``: the matmul flops of one training sample of the chapter's network
  (784 -> Dense 512 -> Dense 10): the forward products ``x W1`` and ``h W2``, and in the
  backward pass the weight gradients ``x^T dh`` and ``h^T dy`` and the hidden gradient
  ``dy W2^T`` (the input's gradient is not needed): ``2 * (2 * 784 * 512 + 3 * 512 * 10)``
  = 1,636,352. Biases, activations, dropout, the loss and the optimizer are not counted.
- ``roofline_samples_per_s``: ``peak_gflops`` over ``mlp_flops_per_sample``: the samples per
  second of a loop that did nothing but this network's matmuls at the CPU's peak.
- ``mlp_matmuls_samples_per_s``: the five matmuls of one training step at batch 32 (the shapes
  above, nothing else) in a ``tf.while_loop`` inside one ``tf.function``: what those
  matmuls alone reach at this small batch size, where they run well below the peak.

The benchmark reports ``kexp custom/epoch``'s samples/s at batch 32 as a fraction of the
roofline (``roofline_samples_per_s`` of the default pools, every core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = ["MLP_FLOPS_PER_SAMPLE", "mlp_flops_per_sample", "measure"]

INPUTS, HIDDEN, CLASSES = 784, 512, 10


def mlp_flops_per_sample(inputs: int = INPUTS, hidden: int = HIDDEN,
                         classes: int = CLASSES) -> int:
    """Matmul flops of one training sample: two forward products, two weight gradients and
    the hidden layer's gradient (2 flops per multiply-add)."""
    return 2 * (2 * inputs * hidden + 3 * hidden * classes)


MLP_FLOPS_PER_SAMPLE = mlp_flops_per_sample()


def _best_rate(run, work: float, seconds: float, windows: int = 3) -> float:
    """``work`` units per second of ``run(k)`` (k repetitions), best of ``windows`` windows of
    about ``seconds`` each."""
    run(1)  # warm up (oneDNN picks its kernels, tf.function traces)
    start = time.perf_counter()
    run(1)
    once = max(time.perf_counter() - start, 1e-6)
    reps = max(1, int(seconds / once))
    best = 0.0
    for _ in range(windows):
        start = time.perf_counter()
        run(reps)
        best = max(best, work * reps / (time.perf_counter() - start))
    return best


def measure(threads: int = 0, size: int = 2048, batch: int = 32,
            seconds: float = 1.0) -> dict[str, float | int | str]:
    """The figures above, with ``threads`` per pool (0: TensorFlow's default)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    rng = tf.random.Generator.from_seed(0)
    a = rng.normal([size, size])
    b = rng.normal([size, size])

    def big(reps: int) -> None:
        for _ in range(reps):
            c = tf.matmul(a, b)
        c.numpy()  # wait for the last one

    peak = _best_rate(big, 2.0 * size**3, seconds) / 1e9

    x = rng.normal([batch, INPUTS])

    @tf.function(autograph=False)
    def mlp_steps(steps, w1, w2):
        def body(i, w1, w2):
            h = tf.matmul(x, w1)                            # forward, layer 1
            y = tf.matmul(h, w2)                            # forward, layer 2
            dh = tf.matmul(y, w2, transpose_b=True)         # hidden gradient
            gw1 = tf.matmul(x, dh, transpose_a=True)        # weight gradients
            gw2 = tf.matmul(h, y, transpose_a=True)
            # Each step's products feed the next: nothing can be hoisted out of the loop.
            return i + 1, gw1, gw2

        return tf.while_loop(lambda i, *_: i < steps, body, [tf.constant(0), w1, w2])[1]

    w1 = rng.normal([INPUTS, HIDDEN]) * 0.01
    w2 = rng.normal([HIDDEN, CLASSES]) * 0.01
    steps = 200

    def mlp(reps: int) -> None:
        for _ in range(reps):
            out = mlp_steps(tf.constant(steps), w1, w2)
        out.numpy()

    mlp_rate = _best_rate(mlp, steps * batch, seconds)
    return {
        "threads": threads or "default",
        "matmul_size": size,
        "peak_gflops": peak,
        "mlp_flops_per_sample": MLP_FLOPS_PER_SAMPLE,
        "roofline_samples_per_s": peak * 1e9 / MLP_FLOPS_PER_SAMPLE,
        "mlp_batch": batch,
        "mlp_matmuls_samples_per_s": mlp_rate,
        "mlp_matmuls_gflops": mlp_rate * MLP_FLOPS_PER_SAMPLE / 1e9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per pool (default 0: TensorFlow's default)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a window")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.threads, seconds=args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
