"""The book's chapter 3-4 programs (examples/) run as subprocesses, shortened, and what they
print checked: Boston housing on the real data (never skipped in CI), IMDB and Reuters on
their stand-in data (forced with an empty --data-dir), the chapter 4 overfitting models."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

EXAMPLES = Path(REPO) / "examples"


def run_example(name, *args, timeout=900):
    env = dict(os.environ)
    # a child gets the sanitizer options meant for children (see helpers.run_python)
    if "MINIGRAD_CHILD_ASAN_OPTIONS" in env:
        env["ASAN_OPTIONS"] = env["MINIGRAD_CHILD_ASAN_OPTIONS"]
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def ok(proc):
    assert proc.returncode == 0, (f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                  f"stderr:\n{proc.stderr}")
    return proc.stdout


def number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in:\n{text}"
    value = float(match.group(1))
    assert math.isfinite(value), f"{pattern!r}: {value}"
    return value


def boston_dir():
    """The folder holding the real Boston data: $MINIGRAD_DATASETS or ../shared/datasets.
    Missing data fails under CI and skips (one line) otherwise."""
    from minigrad.datasets import boston_housing
    candidates = [os.environ.get("MINIGRAD_DATASETS"),
                  os.path.join(os.path.dirname(REPO), "shared", "datasets")]
    for folder in filter(None, candidates):
        try:
            boston_housing.load_data(data_dir=folder)
            return folder
        except FileNotFoundError:
            continue
    reason = f"Boston housing data not found in {[c for c in candidates if c]}"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: the real data must be there)")
    pytest.skip(reason)


@pytest.fixture
def empty_dir(tmp_path):
    """A --data-dir without imdb.npz / reuters.npz: the programs use their stand-in data."""
    return tmp_path


# ---------------------------------------------------------------- Boston housing (3.7)

def test_boston_housing_short_run_on_the_real_data():
    out = ok(run_example("ch3_boston_housing.py", "--folds", 2, "--scores-epochs", 2,
                         "--num-epochs", 3, "--epochs", 20, "--seed", 0,
                         "--data-dir", boston_dir()))
    # the real data in Keras' split: 404 training rows starting with the book's targets
    assert "train_data.shape: (404, 13) test_data.shape: (102, 13)" in out
    assert "train_targets[:12]: [15.2 42.3 50.  21.1 17.7 18.5 11.3 15.6 15.6 14.4 12.1 17.9]" in out
    scores = re.search(r"all_scores: \[(.*)\]", out).group(1).split(",")
    assert len(scores) == 2 and all(0 < float(s) < 25 for s in scores)
    # 2 folds of 202 training rows, batch 1: 2 * (2 + 3) * 202 steps
    steps = number(r"k-fold training \(2 folds, batch_size=1\): (\d+) steps", out)
    assert steps == 2 * (2 + 3) * 202
    per_step = number(r"([\d.]+) microseconds per step", out)
    assert 0 < per_step < 1e5
    mae = number(r"test MAE: ([\d.]+)", out)
    assert 0 < mae < 10, f"test MAE {mae} after 20 epochs"
    mse = number(r"test MSE: ([\d.]+)", out)
    assert mae ** 2 <= mse * 1.0001  # MAE^2 <= MSE always


def test_boston_housing_defaults_are_the_books_settings():
    out = " ".join(ok(run_example("ch3_boston_housing.py", "--help")).split())
    for option, default in (("--folds", 4), ("--scores-epochs", 100), ("--num-epochs", 500),
                            ("--epochs", 80)):
        assert re.search(re.escape(option) + r" [A-Z_]+ [^()]*\(book: " + str(default) + r"\)", out), out
    source = (EXAMPLES / "ch3_boston_housing.py").read_text()
    assert "batch_size=1, verbose=0" in source and "epochs=args.epochs, batch_size=16" in source


def test_boston_housing_without_data_fails_clearly(empty_dir):
    proc = run_example("ch3_boston_housing.py", "--data-dir", empty_dir, "--folds", 2)
    assert proc.returncode != 0
    assert "no Boston housing file in data_dir" in proc.stderr


# ---------------------------------------------------------------- IMDB (3.5)

def test_imdb_on_stand_in_data_learns(empty_dir):
    out = ok(run_example("ch3_imdb.py", "--epochs", 2, "--final-epochs", 4, "--seed", 0,
                         "--standin-samples", 3000, "--val-samples", 500, "--data-dir", empty_dir))
    assert "STAND-IN DATA" in out
    assert "max word index: 9999" in out
    assert "history keys: ['acc', 'loss', 'val_acc', 'val_loss']" in out
    val_acc = [float(line.split()[4]) for line in out.splitlines()
               if re.match(r"\s+[12]\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+$", line)]
    assert len(val_acc) == 2 and all(0 <= v <= 1 for v in val_acc)
    accuracy = number(r"test accuracy: ([\d.]+)", out)
    assert accuracy > 0.6, f"stand-in IMDB test accuracy {accuracy} (chance: 0.5)"


# ---------------------------------------------------------------- Reuters (3.6)

def test_reuters_on_stand_in_data_beats_the_random_baseline(empty_dir):
    out = ok(run_example("ch3_reuters.py", "--epochs", 2, "--final-epochs", 4, "--seed", 0,
                         "--standin-samples", 2000, "--val-samples", 400, "--data-dir", empty_dir))
    assert "STAND-IN DATA" in out
    assert "len(train_data): 2000 len(test_data): 500" in out
    assert "predictions[0].shape: (46,)  sum: 1.0" in out
    baseline = number(r"random baseline: ([\d.]+)", out)
    accuracy = number(r"test accuracy: ([\d.]+)", out)
    sparse = number(r"sparse labels \(test loss, test acc\): \[[\d.]+, ([\d.]+)\]", out)
    assert 0.05 < baseline < 0.35
    assert accuracy > baseline + 0.1, f"test accuracy {accuracy}, random baseline {baseline}"
    assert sparse > baseline + 0.1


# ---------------------------------------------------------------- overfitting (4.4)

def test_overfitting_models_on_stand_in_data(empty_dir):
    out = ok(run_example("ch4_overfitting.py", "--epochs", 2, "--standin-samples", 1500, "--seed", 0,
                         "--models", "original,smaller,bigger,l2,l1_l2,dropout",
                         "--data-dir", empty_dir))
    assert "STAND-IN DATA" in out
    params = {"original": "160,305", "smaller": "40,029", "bigger": "5,383,681", "l2": "160,305",
              "l1_l2": "160,305", "dropout": "160,305"}
    for name, count in params.items():
        line = next((l for l in out.splitlines() if l.startswith(f"{name} ")), None)
        assert line is not None, f"no line for {name}:\n{out}"
        assert f"({count} parameters" in line, line
        values = [float(v) for v in re.findall(r"(?:loss|acc) ([\d.]+)", line)]
        assert len(values) == 4 and all(math.isfinite(v) for v in values), line
    table = out.split("validation loss per epoch")[1].splitlines()
    assert table[1].split() == ["epoch"] + list(params)
    assert [row.split()[0] for row in table[2:4]] == ["1", "2"]
    first = {name: float(v) for name, v in zip(params, table[2].split()[1:])}
    assert all(0 < v < 5 for v in first.values())


@pytest.mark.parametrize("name", ["ch3_imdb.py", "ch3_reuters.py", "ch3_boston_housing.py",
                                  "ch4_overfitting.py"])
def test_programs_name_their_book_section_and_take_epochs_and_data_dir(name):
    source = (EXAMPLES / name).read_text()
    assert source.startswith('"""Deep Learning with Python (1st edition), section')
    assert "only the imports" in source
    assert not re.search(r"^\s*(from|import) keras", source, re.M)
    assert re.search(r"^from minigrad(\.datasets)? import ", source, re.M)
    out = ok(run_example(name, "--help"))
    assert "--epochs" in out and "--data-dir" in out
