"""Deep Learning with Python (1st edition), section 3.7: predicting house prices, a regression
example (Boston housing, K-fold validation), run on minigrad on the real data.

What differs from the book's code:
- only the imports: ``from minigrad import ...`` instead of ``from keras import ...``;
- command-line options (argparse) to shorten a run, name the data folder and set a seed
  (``utils.set_random_seed``); the book's values are the defaults;
- the History key is Keras 3's 'val_mae' (the metric's name as asked: metrics=['mae']),
  not Keras 2.0.8's 'val_mean_absolute_error';
- the plots (matplotlib) are printed as tables of the same numbers;
- the data is read from a local copy (``--data-dir``, default $MINIGRAD_DATASETS or
  ../shared/datasets): the StatLib CSV holds the same 506 rows in the same order as Keras'
  boston_housing.npz, split the same way (404 train, 102 test);
- the microseconds per step of the k-fold training (batch_size=1) are printed.

The defaults are the book's settings: k = 4 folds, 100 epochs for the scores, 500 epochs for
the MAE curve, then a final model of 80 epochs with batch size 16.

Run: python examples/ch3_boston_housing.py [--folds 4] [--scores-epochs 100]
     [--num-epochs 500] [--epochs 80] [--data-dir DIR] [--seed S]
"""
import argparse
import math
import os
import time

import numpy as np

from minigrad import layers, models, utils  # was: from keras import models, layers
from minigrad.datasets import boston_housing  # was: from keras.datasets import boston_housing

_SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "datasets")
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=80, help="epochs of the final model (book: 80)")
parser.add_argument("--folds", type=int, default=4, help="k of the K-fold validation (book: 4)")
parser.add_argument("--scores-epochs", type=int, default=100,
                    help="epochs per fold of the first K-fold run (book: 100)")
parser.add_argument("--num-epochs", type=int, default=500,
                    help="epochs per fold of the K-fold run that records the MAE curve (book: 500)")
parser.add_argument("--data-dir", default=os.environ.get("MINIGRAD_DATASETS") or
                    (os.path.normpath(_SHARED) if os.path.isdir(_SHARED) else None),
                    help="folder holding boston_house_prices.csv or boston_housing.npz "
                         "(directly or in boston_housing/)")
parser.add_argument("--seed", type=int, default=None, help="utils.set_random_seed(seed) first")
args = parser.parse_args()
if args.seed is not None:
    utils.set_random_seed(args.seed)

# ---- Listing 3.24: loading the Boston housing dataset
(train_data, train_targets), (test_data, test_targets) = boston_housing.load_data(
    data_dir=args.data_dir)
print("train_data.shape:", train_data.shape, "test_data.shape:", test_data.shape)
print("train_targets[:12]:", train_targets[:12])

# ---- Listing 3.25: normalizing the data
mean = train_data.mean(axis=0)
train_data -= mean
std = train_data.std(axis=0)
train_data /= std

test_data -= mean
test_data /= std


# ---- Listing 3.26: model definition
def build_model():
    model = models.Sequential()
    model.add(layers.Dense(64, activation='relu',
                           input_shape=(train_data.shape[1],)))
    model.add(layers.Dense(64, activation='relu'))
    model.add(layers.Dense(1))
    model.compile(optimizer='rmsprop', loss='mse', metrics=['mae'])
    return model


class StepTimer:
    """Wall-clock time, this process's CPU time (all its threads) and the number of steps
    of the k-fold fits (batch_size=1: one step per sample)."""
    seconds = 0.0
    cpu_seconds = 0.0
    steps = 0

    @classmethod
    def fit(cls, model, x, y, epochs, batch_size, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, **kwargs)
        cls.seconds += time.perf_counter() - start
        cls.cpu_seconds += time.process_time() - cpu_start
        cls.steps += epochs * math.ceil(len(x) / batch_size)
        return history


# ---- Listing 3.27: K-fold validation
k = args.folds
num_val_samples = len(train_data) // k
num_epochs = args.scores_epochs
all_scores = []
for i in range(k):
    print('processing fold #', i)
    val_data = train_data[i * num_val_samples: (i + 1) * num_val_samples]
    val_targets = train_targets[i * num_val_samples: (i + 1) * num_val_samples]

    partial_train_data = np.concatenate(
        [train_data[:i * num_val_samples],
         train_data[(i + 1) * num_val_samples:]],
        axis=0)
    partial_train_targets = np.concatenate(
        [train_targets[:i * num_val_samples],
         train_targets[(i + 1) * num_val_samples:]],
        axis=0)

    model = build_model()
    StepTimer.fit(model, partial_train_data, partial_train_targets,
                  epochs=num_epochs, batch_size=1, verbose=0)
    val_mse, val_mae = model.evaluate(val_data, val_targets, verbose=0)
    all_scores.append(val_mae)

print("all_scores:", [round(s, 4) for s in all_scores])
print(f"mean validation MAE over {k} folds after {num_epochs} epochs: {np.mean(all_scores):.4f}")
scores_timing = (StepTimer.seconds, StepTimer.cpu_seconds, StepTimer.steps)

# ---- Listing 3.28: saving the validation logs at each fold
num_epochs = args.num_epochs
all_mae_histories = []
for i in range(k):
    print('processing fold #', i)
    val_data = train_data[i * num_val_samples: (i + 1) * num_val_samples]
    val_targets = train_targets[i * num_val_samples: (i + 1) * num_val_samples]
    partial_train_data = np.concatenate(
        [train_data[:i * num_val_samples],
         train_data[(i + 1) * num_val_samples:]],
        axis=0)
    partial_train_targets = np.concatenate(
        [train_targets[:i * num_val_samples],
         train_targets[(i + 1) * num_val_samples:]],
        axis=0)
    model = build_model()
    history = StepTimer.fit(model, partial_train_data, partial_train_targets,
                            validation_data=(val_data, val_targets),
                            epochs=num_epochs, batch_size=1, verbose=0)
    mae_history = history.history['val_mae']
    all_mae_histories.append(mae_history)

# ---- Listing 3.29: building the history of successive mean K-fold validation scores
average_mae_history = [
    np.mean([x[i] for x in all_mae_histories]) for i in range(num_epochs)]


# ---- Listing 3.31: plotting validation scores, excluding the first 10 data points
def smooth_curve(points, factor=0.9):
    smoothed_points = []
    for point in points:
        if smoothed_points:
            previous = smoothed_points[-1]
            smoothed_points.append(previous * factor + point * (1 - factor))
        else:
            smoothed_points.append(point)
    return smoothed_points


smooth_mae_history = smooth_curve(average_mae_history[10:]) or smooth_curve(average_mae_history)
offset = 10 if len(average_mae_history) > 10 else 0
print("epoch  validation MAE (mean over folds)  smoothed")
every = max(1, num_epochs // 10)
for epoch in sorted(set(range(0, num_epochs, every)) | {num_epochs - 1}):
    smoothed = (f"{smooth_mae_history[epoch - offset]:.4f}" if epoch >= offset else "")
    print(f"{epoch + 1:5d}  {average_mae_history[epoch]:.4f}                            {smoothed}")
best = int(np.argmin(smooth_mae_history)) + offset
print(f"smoothed validation MAE lowest at epoch {best + 1} ({smooth_mae_history[best - offset]:.4f})")

# ---- Listing 3.32: training the final model
model = build_model()
model.fit(train_data, train_targets,
          epochs=args.epochs, batch_size=16, verbose=0)
test_mse_score, test_mae_score = model.evaluate(test_data, test_targets, verbose=0)

seconds, steps = StepTimer.seconds, StepTimer.steps
print(f"k-fold training ({k} folds, batch_size=1): {steps} steps in {seconds:.1f} s, "
      f"{1e6 * seconds / max(steps, 1):.1f} microseconds per step (wall clock; the first "
      f"{k}-fold run alone, without validation: {1e6 * scores_timing[0] / max(scores_timing[2], 1):.1f})")
print(f"  CPU time of this process: {1e6 * StepTimer.cpu_seconds / max(steps, 1):.1f} "
      f"microseconds per step ({StepTimer.cpu_seconds:.1f} s)")
print(f"test MSE: {test_mse_score:.4f}")
print(f"test MAE: {test_mae_score:.4f}")
