"""Pictures: plot_history and plot_misclassified write real PNGs; the CLI's --plot."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from helpers import mnist_dir
from minigrad import callbacks, plot, utils

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the IHDR chunk; asserts the file is a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG, f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_plot_history_writes_one_panel_per_quantity(tmp_path):
    history = callbacks.History()
    history.history = {"loss": [0.5, 0.3, 0.2], "accuracy": [0.8, 0.9, 0.95],
                       "val_loss": [0.6, 0.4, 0.35], "val_accuracy": [0.78, 0.88, 0.9]}
    path = utils.plot_history(history, tmp_path / "h.png")
    width, height = png_size(path)
    assert width == 1000 and height == 380  # two 5 x 3.8 inch panels at 100 dpi
    assert os.path.getsize(path) > 10_000  # curves and text, not a blank image
    one = plot.plot_history({"mae": [3.0, 2.5]}, tmp_path / "m.png")
    assert png_size(one) == (500, 380)


@pytest.mark.parametrize("bad, error", [({}, TypeError), ({"loss": []}, ValueError), (3, TypeError)])
def test_plot_history_refuses_what_is_not_a_history(tmp_path, bad, error):
    with pytest.raises(error, match="plot_history"):
        plot.plot_history(bad, tmp_path / "x.png")


def test_plot_misclassified_shows_only_the_mistakes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((40, 28 * 28)).astype(np.float32)
    labels = rng.integers(0, 10, 40)
    predictions = labels.copy()
    predictions[[3, 7, 11]] = (labels[[3, 7, 11]] + 1) % 10
    shown = plot.plot_misclassified(images, labels, np.eye(10)[predictions], tmp_path / "w.png")
    assert shown == 3
    assert png_size(tmp_path / "w.png") == (600, 220)  # 3 columns x 1 row of 2 x 2.2 inches
    with pytest.raises(ValueError, match="plot_misclassified: expected 40 labels"):
        plot.plot_misclassified(images, labels[:5], predictions, tmp_path / "x.png")


def test_without_matplotlib_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'minigrad\[plot\]'"):
        plot._pyplot()


def test_cli_plot_writes_both_pictures(tmp_path):
    code = (
        "import sys\n"
        "from minigrad import train_mnist\n"
        "from minigrad.datasets import mnist\n"
        "real = mnist.load_data\n"
        "def small(*a, **k):\n"
        "    (x, y), (xt, yt) = real(*a, **k)\n"
        "    return (x[:2560], y[:2560]), (xt[:500], yt[:500])\n"
        "mnist.load_data = small\n"
        f"sys.exit(train_mnist.main(['--epochs', '2', '--threads', '1', '--verbose', '0', "
        f"'--validation-split', '0.2', '--plot', {str(tmp_path)!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MINIGRAD_DATA": str(mnist_dir())})
    assert result.returncode == 0, result.stderr
    assert png_size(tmp_path / "history.png") == (1000, 380)  # loss and accuracy panels
    width, height = png_size(tmp_path / "misclassified.png")
    assert width == 1000 and height >= 220 and "misclassified digits shown" in result.stdout
