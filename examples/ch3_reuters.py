"""Deep Learning with Python (1st edition), section 3.6: classifying newswires, a multiclass
classification example (Reuters, 46 topics), run on minigrad.

What differs from the book's code:
- only the imports: ``from minigrad import ...`` instead of ``from keras import ...``, and
  ``from minigrad.utils import to_categorical`` for ``keras.utils.np_utils``;
- command-line options (argparse) to shorten a run, name the data folder and set a seed
  (``utils.set_random_seed``); the book's values are the defaults;
- the plots (matplotlib) are printed as tables of the same numbers;
- where reuters.npz is absent (these machines cannot download it), documented stand-in data
  of the same shapes and format is used (see _standin.py) and the program says so.

Run: python examples/ch3_reuters.py [--epochs 20] [--final-epochs 9] [--data-dir DIR]
     (shortened: --standin-samples N --val-samples M, for the stand-in data)
"""
import argparse
import copy
import os
import time

import numpy as np

from minigrad import layers, models, utils  # was: from keras import models, layers
from minigrad.datasets import reuters  # was: from keras.datasets import reuters
from minigrad.utils import to_categorical  # was: from keras.utils.np_utils import to_categorical

import _standin

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=20,
                    help="epochs of the validation runs (book: 20)")
parser.add_argument("--final-epochs", type=int, default=9,
                    help="epochs of the model retrained from scratch (book: 9)")
parser.add_argument("--data-dir", default=os.environ.get("MINIGRAD_DATASETS"),
                    help="folder holding reuters.npz (default: $MINIGRAD_DATASETS; nothing is "
                         "downloaded unless --download)")
parser.add_argument("--download", action="store_true",
                    help="look in the cache and download reuters.npz when absent")
parser.add_argument("--standin-samples", type=int, default=8982,
                    help="training wires of the stand-in data (the real set: 8982 train, 2246 test; "
                         "the test set keeps that ratio)")
parser.add_argument("--val-samples", type=int, default=1000,
                    help="the validation set taken from the training data (book: 1000)")
parser.add_argument("--seed", type=int, default=None,
                    help="utils.set_random_seed(seed) first (weights, shuffles, dropout masks)")
args = parser.parse_args()
if args.seed is not None:
    utils.set_random_seed(args.seed)

# ---- Listing 3.12: loading the Reuters dataset
try:
    if not args.data_dir and not args.download:
        raise FileNotFoundError("no --data-dir / MINIGRAD_DATASETS given")
    (train_data, train_labels), (test_data, test_labels) = reuters.load_data(
        num_words=10000, data_dir=None if args.download else args.data_dir)
    print("Data: the real Reuters newswires")
except (OSError, ValueError) as exc:  # FileNotFoundError, DatasetUnavailableError, bad file
    print(f"Data: STAND-IN DATA (reuters.npz not available: {str(exc).splitlines()[0]})")
    print("      random word-index newswires with a topic signal, same shapes and format; "
          "see examples/_standin.py")
    (train_data, train_labels), (test_data, test_labels) = _standin.reuters(
        num_words=10000, train=args.standin_samples,
        test=max(round(args.standin_samples * 2246 / 8982), 46))

print("len(train_data):", len(train_data), "len(test_data):", len(test_data))
print("train_data[10][:10]:", train_data[10][:10], "train_labels[10]:", train_labels[10])


# ---- Listing 3.14: encoding the data
def vectorize_sequences(sequences, dimension=10000):
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        results[i, sequence] = 1.
    return results


x_train = vectorize_sequences(train_data)
x_test = vectorize_sequences(test_data)


def to_one_hot(labels, dimension=46):
    results = np.zeros((len(labels), dimension))
    for i, label in enumerate(labels):
        results[i, label] = 1.
    return results


one_hot_train_labels = to_one_hot(train_labels)
one_hot_test_labels = to_one_hot(test_labels)
# the built-in way (the same values)
one_hot_train_labels = to_categorical(train_labels)
one_hot_test_labels = to_categorical(test_labels)

# ---- Listings 3.15-3.16: model definition and compilation
model = models.Sequential()
model.add(layers.Dense(64, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(46, activation='softmax'))
model.compile(optimizer='rmsprop',
              loss='categorical_crossentropy',
              metrics=['accuracy'])

# ---- Listing 3.17: setting aside a validation set
num_val = args.val_samples  # the book: 1000
x_val = x_train[:num_val]
partial_x_train = x_train[num_val:]
y_val = one_hot_train_labels[:num_val]
partial_y_train = one_hot_train_labels[num_val:]

# ---- Listing 3.18: training the model
start = time.perf_counter()
history = model.fit(partial_x_train,
                    partial_y_train,
                    epochs=args.epochs,
                    batch_size=512,
                    validation_data=(x_val, y_val),
                    verbose=2)
seconds = time.perf_counter() - start

# ---- Listings 3.19-3.20: training and validation loss / accuracy (printed, not plotted)
h = history.history
print("epoch  loss    val_loss  accuracy  val_accuracy")
for epoch in range(len(h['loss'])):
    print(f"{epoch + 1:5d}  {h['loss'][epoch]:.4f}  {h['val_loss'][epoch]:.4f}    "
          f"{h['accuracy'][epoch]:.4f}    {h['val_accuracy'][epoch]:.4f}")
best = int(np.argmin(h['val_loss']))
print(f"lowest validation loss at epoch {best + 1} ({h['val_loss'][best]:.4f}); "
      f"{args.epochs} epochs in {seconds:.1f} s")

# ---- Listing 3.21: retraining a model from scratch
model = models.Sequential()
model.add(layers.Dense(64, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(46, activation='softmax'))
model.compile(optimizer='rmsprop',
              loss='categorical_crossentropy',
              metrics=['accuracy'])
model.fit(partial_x_train,
          partial_y_train,
          epochs=args.final_epochs,
          batch_size=512,
          validation_data=(x_val, y_val),
          verbose=2)
results = model.evaluate(x_test, one_hot_test_labels, verbose=0)
print("results (test loss, test accuracy):", results)

# the accuracy of a random classifier
test_labels_copy = copy.copy(test_labels)
np.random.shuffle(test_labels_copy)
hits_array = np.array(test_labels) == np.array(test_labels_copy)
random_baseline = float(np.sum(hits_array)) / len(test_labels)
print(f"random baseline: {random_baseline:.4f}")

# ---- Listing 3.22: generating predictions for new data
predictions = model.predict(x_test, verbose=0)
print("predictions[0].shape:", predictions[0].shape, " sum:", round(float(np.sum(predictions[0])), 5),
      " argmax:", int(np.argmax(predictions[0])))

# ---- A different way to handle the labels and the loss: integer labels
y_train = np.array(train_labels)
y_test = np.array(test_labels)
model = models.Sequential()
model.add(layers.Dense(64, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(64, activation='relu'))
model.add(layers.Dense(46, activation='softmax'))
model.compile(optimizer='rmsprop', loss='sparse_categorical_crossentropy', metrics=['acc'])
model.fit(x_train[num_val:], y_train[num_val:], epochs=args.final_epochs, batch_size=512, verbose=0,
          validation_data=(x_train[:num_val], y_train[:num_val]))
sparse_results = model.evaluate(x_test, y_test, verbose=0)
print("sparse labels (test loss, test acc):", sparse_results)

# ---- Listing 3.23: a model with an information bottleneck
model = models.Sequential()
model.add(layers.Dense(64, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(4, activation='relu'))
model.add(layers.Dense(46, activation='softmax'))
model.compile(optimizer='rmsprop',
              loss='categorical_crossentropy',
              metrics=['accuracy'])
bottleneck = model.fit(partial_x_train,
                       partial_y_train,
                       epochs=args.epochs,
                       batch_size=128,
                       validation_data=(x_val, y_val),
                       verbose=0)
print(f"bottleneck model: best validation accuracy {max(bottleneck.history['val_accuracy']):.4f}")
print(f"test accuracy: {results[1]:.4f}")
