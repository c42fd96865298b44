"""The model's graph in the run's TensorBoard logs (Keras 3's ``TensorBoard(write_graph=True)``
writes only the model config, which TensorBoard's Graphs tab cannot draw)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import keras

__all__ = ["ModelGraph"]


class ModelGraph(keras.callbacks.Callback):
    """Traces the model's forward pass once at the start of training and writes the graph to
    ``<log_dir>/train``, where TensorBoard's Graphs tab finds it.

    ``input_spec`` is the structure of the model's inputs (``dataset.element_spec[0]``), so
    sequential, functional and subclassed models are traced alike.
    """

    def __init__(self, log_dir: Path, input_spec: Any):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.input_spec = input_spec

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        model = self.model
        try:
            forward = tf.function(lambda x: model(x, training=False))
            graph = forward.get_concrete_function(self.input_spec).graph
            writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
            with writer.as_default():
                tf.summary.graph(graph)
            writer.close()
        except Exception as exc:  # a graph is a convenience; never fail a run over it
            sys.stderr.write(f"warning: the model graph was not written to TensorBoard ({exc})\n")
