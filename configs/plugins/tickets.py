"""Plugins for the chapter's subclassing listings (7.14–7.16).

Named in a config as `plugins: [plugins/tickets.py]`; registering makes each class usable as
`type:` anywhere a model or layer goes, and loadable from the run's .keras files.
"""

import keras
from keras import layers

from kexp.registry import LAYERS, MODELS


@MODELS.register()
class CustomerTicketModel(keras.Model):
    """Listing 7.14: concatenate the three inputs, mix, then score priority and classify the
    department. Called on a mapping of named inputs."""

    def __init__(self, num_departments, **kwargs):
        super().__init__(**kwargs)
        self.num_departments = num_departments
        self.concat_layer = layers.Concatenate()
        self.mixing_layer = layers.Dense(64, activation="relu")
        self.priority_scorer = layers.Dense(1, activation="sigmoid")
        self.department_classifier = layers.Dense(num_departments, activation="softmax")

    def call(self, inputs):
        features = self.concat_layer([inputs["title"], inputs["text_body"], inputs["tags"]])
        features = self.mixing_layer(features)
        return {
            "priority": self.priority_scorer(features),
            "department": self.department_classifier(features),
        }

    def get_config(self):
        return {**super().get_config(), "num_departments": self.num_departments}


@LAYERS.register()
class Classifier(keras.Model):
    """Listing 7.15: one sigmoid unit for two classes, else a softmax over `num_classes`;
    a subclassed model used as a node of a functional model."""

    def __init__(self, num_classes=2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        if num_classes == 2:
            self.dense = layers.Dense(1, activation="sigmoid")
        else:
            self.dense = layers.Dense(num_classes, activation="softmax")

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@MODELS.register()
class MyModel(keras.Model):
    """Listing 7.16: a subclassed model holding a functional binary classifier."""

    def __init__(self, num_features=64, **kwargs):
        super().__init__(**kwargs)
        self.num_features = num_features
        inputs = keras.Input(shape=(num_features,))
        outputs = layers.Dense(1, activation="sigmoid")(inputs)
        self.binary_classifier = keras.Model(inputs=inputs, outputs=outputs)
        self.dense = layers.Dense(num_features, activation="relu")

    def call(self, inputs):
        return self.binary_classifier(self.dense(inputs))

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features}
