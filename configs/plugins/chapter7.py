"""Plugins for the chapter's custom metric (Listing 7.18), custom callback (7.20) and a
learning-rate schedule function for LearningRateScheduler (7.3.2)."""

import keras
from keras import ops

from kexp.registry import CALLBACKS, METRICS, SCHEDULES


@METRICS.register()
class RootMeanSquaredError(keras.metrics.Metric):
    """Listing 7.18: RMSE between one-hot targets and predicted probabilities, with state in
    `mse_sum` (float) and `total_samples` (int)."""

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.mse_sum = self.add_weight(name="mse_sum", initializer="zeros")
        self.total_samples = self.add_weight(name="total_samples", initializer="zeros",
                                             dtype="int32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"),
                             ops.shape(y_pred)[1])
        mse = ops.sum(ops.square(y_true - y_pred))
        self.mse_sum.assign_add(mse)
        self.total_samples.assign_add(ops.shape(y_pred)[0])

    def result(self):
        return ops.sqrt(self.mse_sum / ops.cast(self.total_samples, "float32"))

    def reset_state(self):
        self.mse_sum.assign(0.0)
        self.total_samples.assign(0)


@CALLBACKS.register()
class PlotPerBatchLoss(keras.callbacks.Callback):
    """Listing 7.20: collect each batch's loss, draw one page per epoch, and write all pages
    to one file at the end of training (`.pdf`: one page per epoch; `.png`: one figure with
    a panel per epoch). A relative `file` lands in the run directory."""

    def __init__(self, file="training_loss.pdf"):
        super().__init__()
        self.file = file

    def on_train_begin(self, logs=None):
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self.per_batch = []

    def on_train_batch_end(self, batch, logs=None):
        self.per_batch.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(self.per_batch)

    def on_train_end(self, logs=None):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.backends.backend_pdf import PdfPages

        if self.file.endswith(".pdf"):
            with PdfPages(self.file) as pdf:
                for epoch, losses in enumerate(self.per_epoch):
                    fig, ax = plt.subplots()
                    _draw(ax, epoch, losses)
                    pdf.savefig(fig)
                    plt.close(fig)
            return
        fig, axes = plt.subplots(len(self.per_epoch), 1, squeeze=False,
                                 figsize=(6, 3 * len(self.per_epoch)))
        for epoch, losses in enumerate(self.per_epoch):
            _draw(axes[epoch][0], epoch, losses)
        fig.tight_layout()
        fig.savefig(self.file)
        plt.close(fig)


def _draw(ax, epoch, losses):
    ax.plot(range(len(losses)), losses, "o-", markersize=2)
    ax.set(xlabel="batch", ylabel="loss", title=f"Training loss per batch, epoch {epoch}")


@SCHEDULES.register()
def halve_every_two_epochs(epoch, learning_rate):
    """A LearningRateScheduler schedule: the learning rate halves every second epoch."""
    return learning_rate * 0.5 if epoch > 0 and epoch % 2 == 0 else learning_rate
