"""``{type: Preprocess, application: MobileNetV2}``: a Keras application's ``preprocess_input``
as a layer, registered with Keras serialization (``kexp>ApplicationPreprocess``) so that a
saved model reloads in safe mode -- no Lambda layer, no Python code in the file.

Importing this module imports Keras; kexp imports it before loading a saved model.
"""

from __future__ import annotations

import importlib
from typing import Any

import keras

from kexp.models.catalog import preprocess_module

__all__ = ["ApplicationPreprocess"]


@keras.saving.register_keras_serializable(package="kexp")
class ApplicationPreprocess(keras.layers.Layer):
    """Applies ``keras.applications.<module>.preprocess_input`` of ``application`` to its
    (float) input: e.g. MobileNetV2 scales [0, 255] to [-1, 1], ResNet50 turns RGB into BGR
    and subtracts ImageNet's mean."""

    def __init__(self, application: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.application = application
        module = importlib.import_module(preprocess_module(application))
        self._preprocess = module.preprocess_input

    def call(self, inputs: Any) -> Any:
        return self._preprocess(keras.ops.cast(inputs, self.compute_dtype))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "application": self.application}
