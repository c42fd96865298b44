"""Listing 7.4.5: overriding `train_step` while keeping `fit()`, callbacks and everything else.

Both classes keep the Functional constructor (`CustomModel(inputs, outputs)`), so a config
builds them with `model.class:` on a functional model. Written for Keras 3: the chapter's
`compiled_loss` / `compiled_metrics` are `self.compute_loss(...)` and `self.metrics` now.
"""

import keras
import tensorflow as tf

from kexp.registry import MODELS


@MODELS.register()
class LossTrackerModel(keras.Model):
    """First version: a hand-made loss (sparse categorical crossentropy) and a `Mean` loss
    tracker listed by the `metrics` property, so `fit` resets it every epoch. The model is
    compiled with an optimizer only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def train_step(self, data):
        x, y = data
        # Forward pass.
        with tf.GradientTape() as tape:
            predictions = self(x, training=True)
            loss = self.loss_fn(y, predictions)
        # Gradients.
        gradients = tape.gradient(loss, self.trainable_weights)
        # Update the weights and the tracker.
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        x, y = data
        loss = self.loss_fn(y, self(x, training=False))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


@MODELS.register()
class CustomModel(keras.Model):
    """Second version: the compiled loss and metrics (`self.compute_loss`, `self.metrics`),
    plus a metric of its own: the global norm of the gradients (`grad_norm`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")

    def train_step(self, data):
        x, y = data
        # Forward pass.
        with tf.GradientTape() as tape:
            predictions = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=predictions)
        # Gradients.
        gradients = tape.gradient(loss, self.trainable_weights)
        # Update the weights, then every metric.
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        self.grad_norm_tracker.update_state(tf.linalg.global_norm(gradients))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric is not self.grad_norm_tracker:
                metric.update_state(y, predictions)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [*super().metrics, self.grad_norm_tracker]
