"""``python -m minigrad.train_mnist`` as a user runs it: one real epoch, bad flags, missing data."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mnist_dir
from minigrad import layers, models, train_mnist


def run_cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "minigrad.train_mnist", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_one_epoch_on_real_mnist(tmp_path):
    weights = tmp_path / "mnist.npz"
    # One thread: a full epoch in ~2 s even when other processes load the machine (OpenMP
    # threads that spin-wait on a busy CPU can make a multi-threaded epoch 10x slower).
    result = run_cli("--epochs", "1", "--batch-size", "128", "--seed", "0", "--verbose", "2",
                     "--threads", "1", "--save-weights", str(weights),
                     env_extra={"MINIGRAD_DATA": str(mnist_dir())})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Epoch 1/1" in out
    line = r"^469/469 - \d+s - \d+(ms|us|s)/step - accuracy: 0\.\d{4} - loss: 0\.\d{4}$"
    assert re.search(line, out, re.M), out
    acc = float(re.search(r"test_loss: \d\.\d{4} - test_acc: (\d\.\d{4})", out).group(1))
    assert acc > 0.94  # the book's network after one epoch reaches ~0.96
    assert re.search(r"seconds per epoch: \d+\.\d\d \(mean of 1\), samples/second: [\d,]+", out)
    model = models.Sequential([layers.Dense(512, activation="relu"), layers.Dense(10, activation="softmax")])
    model.load_weights(weights)
    assert model.count_params() == 407_050


@pytest.mark.parametrize("args, match", [
    (["--epochs", "0"], r"--epochs: expected a positive integer, received '0'"),
    (["--batch-size", "ten"], r"--batch-size: expected a positive integer"),
    (["--learning-rate", "-0.1"], r"--learning-rate: expected a positive finite number"),
    (["--verbose", "3"], r"--verbose: invalid choice"),
    (["--threads", "0"], r"--threads"),
    (["--frobnicate"], r"unrecognized arguments: --frobnicate"),
])
def test_bad_flags_exit_2_with_usage(args, match, capsys):
    with pytest.raises(SystemExit) as info:
        train_mnist.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and re.search(match, err)


def test_bad_flags_exit_2_as_a_process():
    result = run_cli("--epochs", "-1")
    assert result.returncode == 2 and "usage:" in result.stderr


def test_missing_dataset_exits_1_with_the_loaders_message(tmp_path):
    result = run_cli("--data", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "could not load MNIST" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_main_returns_1_for_missing_data(tmp_path, capsys):
    assert train_mnist.main(["--data", str(tmp_path)]) == 1
    assert "train_mnist: error: could not load MNIST" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux /proc")
def test_main_job_peak_memory_stays_under_400_mb():
    # The performance target: the whole main job (60000 float32 images, one-hot
    # labels, the model, the test set) peaks under 400 MB; PyTorch's run is ~530 MB.
    code = ("import runpy, sys\n"
            "sys.argv = ['train_mnist', '--epochs', '1', '--threads', '1', '--verbose', '0']\n"
            "try:\n"
            "    runpy.run_module('minigrad.train_mnist', run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    assert not exit.code, exit.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n")
    env = dict(os.environ, MINIGRAD_DATA=str(mnist_dir()))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300, cwd=str(Path(__file__).resolve().parent))
    assert result.returncode == 0, result.stderr
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", result.stdout).group(1))
    assert peak_kb < 400 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
