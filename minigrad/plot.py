"""Pictures of a training run, as PNG files: the loss and metric curves of a ``History``
(training and validation) and a grid of misclassified images.

matplotlib is an optional extra (``pip install minigrad[plot]``); without it these
functions raise an ImportError that says how to install it. They use the
non-interactive Agg backend and never open a window.

>>> import os, tempfile
>>> from minigrad.callbacks import History
>>> history = History(); history.history = {"loss": [0.3, 0.1], "val_loss": [0.35, 0.2],
...                                         "accuracy": [0.9, 0.97], "val_accuracy": [0.89, 0.95]}
>>> path = plot_history(history, os.path.join(tempfile.mkdtemp(), "history.png"))  # doctest: +SKIP
"""
import math
import os

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("minigrad's plots need matplotlib, an optional extra: "
                          "pip install 'minigrad[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _history_dict(history, where):
    data = getattr(history, "history", history)
    if not isinstance(data, dict) or not data:
        raise TypeError(f"{where}: expected a History (what fit returns) or a non-empty dict "
                        f"of lists, received {type(history).__name__}")
    for key, values in data.items():
        if not isinstance(values, (list, tuple, np.ndarray)) or not len(values):
            raise ValueError(f"{where}: expected {key!r} to be a non-empty list of numbers, "
                             f"received {values!r}")
    return data


def plot_history(history, path):
    """Write a PNG of ``history``'s curves against the epoch: one panel per quantity
    (loss, accuracy, mae, ...), each with the training curve and, when present, the
    validation one (``val_<name>``). Returns the path.
    """
    where = "plot_history"
    data = _history_dict(history, where)
    path = os.fspath(path)
    names = [k for k in data if not k.startswith("val_")]
    names += [k[4:] for k in data if k.startswith("val_") and k[4:] not in data]
    plt = _pyplot()
    from matplotlib import ticker
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, style, label in ((name, "o-", "training"), ("val_" + name, "s--", "validation")):
            if key in data:
                values = np.asarray(data[key], dtype=float)
                ax.plot(np.arange(1, len(values) + 1), values, style, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(f"{name} per epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_misclassified(images, labels, predictions, path, limit=25):
    """Write a grid (at most ``limit``) of the images whose predicted class differs from
    the true one, each titled "true 7 / predicted 2". Returns the number shown.

    images: (N, H, W) or (N, H, W, 1) or (N, H*W) with a square H*W; labels and
    predictions: (N,) class indices (or one-hot / probability rows).
    """
    where = "plot_misclassified"
    images, labels, predictions = np.asarray(images), np.asarray(labels), np.asarray(predictions)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    n = len(images)
    if labels.shape != (n,) or predictions.shape != (n,):
        raise ValueError(f"{where}: expected {n} labels and predictions for {n} images, received "
                         f"shapes {labels.shape} and {predictions.shape}")
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"{where}: expected square images, received rows of "
                             f"{images.shape[1]} values")
        images = images.reshape(n, side, side)
    elif images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    elif images.ndim != 3:
        raise ValueError(f"{where}: expected images of shape (N, H, W), (N, H, W, 1) or "
                         f"(N, H*W), received {images.shape}")
    wrong = np.flatnonzero(labels != predictions)[:int(limit)]
    plt = _pyplot()
    cols = max(1, min(5, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.imshow(images[i], cmap="gray_r")
        ax.set_title(f"true {labels[i]} / predicted {predictions[i]}", fontsize=8)
    if not len(wrong):
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    fig.savefig(os.fspath(path))
    plt.close(fig)
    return len(wrong)
