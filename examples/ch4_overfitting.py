"""Deep Learning with Python (1st edition), section 4.4: overfitting and underfitting, on
the IMDB model of section 3.5: reducing the network's size (a smaller and a bigger model),
adding weight regularization (l2, with l1 and l1_l2 shown), adding dropout. Run on minigrad.

What differs from the book's code:
- only the imports: ``from minigrad import ...`` instead of ``from keras import ...``;
- command-line options (argparse) to shorten a run, name the data folder and set a seed
  (``utils.set_random_seed``); the book's values are the defaults;
- the plots (matplotlib) are printed as tables of the same numbers (validation loss per
  epoch of each model against the original one, and the training loss of the bigger one);
- where imdb.npz is absent (these machines cannot download it), documented stand-in data
  of the same shapes and format is used (see _standin.py) and the program says so.

As in the book, the validation data is the test set, and every model trains 20 epochs with
batch size 512.

Run: python examples/ch4_overfitting.py [--epochs 20] [--data-dir DIR] [--models ...]
"""
import argparse
import os
import time

import numpy as np

from minigrad import layers, models, regularizers, utils  # was: from keras import ...
from minigrad.datasets import imdb  # was: from keras.datasets import imdb

import _standin

ALL = ["original", "smaller", "bigger", "l2", "l1", "l1_l2", "dropout"]
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=20, help="epochs of every model (book: 20)")
parser.add_argument("--models", default="original,smaller,bigger,l2,dropout",
                    help=f"comma-separated, among {','.join(ALL)} (the book trains the default "
                         "five; l1 and l1_l2 are its listing 4.7's alternatives)")
parser.add_argument("--data-dir", default=os.environ.get("MINIGRAD_DATASETS"),
                    help="folder holding imdb.npz (default: $MINIGRAD_DATASETS; nothing is "
                         "downloaded unless --download)")
parser.add_argument("--download", action="store_true",
                    help="look in the cache and download imdb.npz when absent")
parser.add_argument("--standin-samples", type=int, default=25000,
                    help="reviews per split of the stand-in data (the real set: 25000)")
parser.add_argument("--seed", type=int, default=None,
                    help="utils.set_random_seed(seed) first (weights, shuffles, dropout masks)")
args = parser.parse_args()
if args.seed is not None:
    utils.set_random_seed(args.seed)
chosen = [name.strip() for name in args.models.split(",") if name.strip()]
unknown = sorted(set(chosen) - set(ALL))
if unknown:
    parser.error(f"--models: unknown {unknown}; expected names among {ALL}")
if "original" not in chosen:
    chosen.insert(0, "original")  # every comparison is against the original model

try:
    if not args.data_dir and not args.download:
        raise FileNotFoundError("no --data-dir / MINIGRAD_DATASETS given")
    (train_data, train_labels), (test_data, test_labels) = imdb.load_data(
        num_words=10000, data_dir=None if args.download else args.data_dir)
    print("Data: the real IMDB reviews")
except (OSError, ValueError) as exc:  # FileNotFoundError, DatasetUnavailableError, bad file
    print(f"Data: STAND-IN DATA (imdb.npz not available: {str(exc).splitlines()[0]})")
    print("      random word-index reviews with a label signal, same shapes and format; "
          "see examples/_standin.py")
    (train_data, train_labels), (test_data, test_labels) = _standin.imdb(
        num_words=10000, train=args.standin_samples, test=args.standin_samples)


def vectorize_sequences(sequences, dimension=10000):
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        results[i, sequence] = 1.
    return results


x_train = vectorize_sequences(train_data)
x_test = vectorize_sequences(test_data)
y_train = np.asarray(train_labels).astype('float32')
y_test = np.asarray(test_labels).astype('float32')


# ---- 4.4.1 Reducing the network's size
def original():  # Listing 4.3: the original model
    model = models.Sequential()
    model.add(layers.Dense(16, activation='relu', input_shape=(10000,)))
    model.add(layers.Dense(16, activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


def smaller():  # Listing 4.4: a version of the model with lower capacity
    model = models.Sequential()
    model.add(layers.Dense(4, activation='relu', input_shape=(10000,)))
    model.add(layers.Dense(4, activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


def bigger():  # Listing 4.5: a version of the model with higher capacity
    model = models.Sequential()
    model.add(layers.Dense(512, activation='relu', input_shape=(10000,)))
    model.add(layers.Dense(512, activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


# ---- 4.4.2 Adding weight regularization
def l2():  # Listing 4.6: adding L2 weight regularization to the model
    model = models.Sequential()
    model.add(layers.Dense(16, kernel_regularizer=regularizers.l2(0.001),
                           activation='relu', input_shape=(10000,)))
    model.add(layers.Dense(16, kernel_regularizer=regularizers.l2(0.001),
                           activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


def _with(regularizer):  # Listing 4.7: different weight regularizers available in Keras
    model = models.Sequential()
    model.add(layers.Dense(16, kernel_regularizer=regularizer, activation='relu',
                           input_shape=(10000,)))
    model.add(layers.Dense(16, kernel_regularizer=regularizer, activation='relu'))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


def l1():
    return _with(regularizers.l1(0.001))


def l1_l2():
    return _with(regularizers.l1_l2(l1=0.001, l2=0.001))


# ---- 4.4.3 Adding dropout
def dropout():  # Listing 4.8: adding dropout to the IMDB network
    model = models.Sequential()
    model.add(layers.Dense(16, activation='relu', input_shape=(10000,)))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(16, activation='relu'))
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(1, activation='sigmoid'))
    return model


builders = {"original": original, "smaller": smaller, "bigger": bigger, "l2": l2, "l1": l1,
            "l1_l2": l1_l2, "dropout": dropout}
histories = {}
for name in chosen:
    model = builders[name]()
    model.compile(optimizer='rmsprop',
                  loss='binary_crossentropy',
                  metrics=['acc'])
    start = time.perf_counter()
    hist = model.fit(x_train, y_train,
                     epochs=args.epochs,
                     batch_size=512,
                     validation_data=(x_test, y_test),
                     verbose=0)
    histories[name] = hist.history
    h = hist.history
    best = int(np.argmin(h['val_loss']))
    print(f"{name:8s} ({model.count_params():,} parameters, {time.perf_counter() - start:.1f} s): "
          f"lowest val_loss {h['val_loss'][best]:.4f} at epoch {best + 1}, last val_loss "
          f"{h['val_loss'][-1]:.4f}, last val_acc {h['val_acc'][-1]:.4f}, "
          f"last training loss {h['loss'][-1]:.4f}", flush=True)

# ---- Figures 4.4-4.8 as tables: validation loss per epoch (and the bigger model's training loss)
columns = list(histories)
print("validation loss per epoch")
print("epoch  " + "  ".join(f"{c:>8s}" for c in columns))
for epoch in range(args.epochs):
    print(f"{epoch + 1:5d}  " + "  ".join(f"{histories[c]['val_loss'][epoch]:8.4f}" for c in columns))
if "bigger" in histories:
    print("training loss per epoch: original vs bigger")
    for epoch in range(args.epochs):
        print(f"{epoch + 1:5d}  {histories['original']['loss'][epoch]:8.4f}  "
              f"{histories['bigger']['loss'][epoch]:8.4f}")
print("final validation accuracy: " + ", ".join(
    f"{c} {histories[c]['val_acc'][-1]:.4f}" for c in columns))
