"""Deep Learning with Python (1st edition), section 3.5: classifying movie reviews, a binary
classification example (IMDB), run on minigrad.

What differs from the book's code:
- only the imports: ``from minigrad import ...`` instead of ``from keras import ...``;
- command-line options (argparse) to shorten a run, name the data folder and set a seed
  (``utils.set_random_seed``); the book's values are the defaults;
- Keras 3 spellings where the book's Keras 2.0.8 ones are gone: ``learning_rate=`` (not
  ``lr=``); the History keys follow the metric names asked for ('acc', 'val_acc');
- the plots (matplotlib) are printed as tables of the same numbers;
- where imdb.npz is absent (these machines cannot download it), documented stand-in data
  of the same shapes and format is used (see _standin.py) and the program says so.

Run: python examples/ch3_imdb.py [--epochs 20] [--final-epochs 4] [--data-dir DIR]
     (shortened: --standin-samples N --val-samples M, for the stand-in data)
"""
import argparse
import os
import sys
import time

import numpy as np

from minigrad import layers, losses, metrics, models, optimizers, utils  # was: from keras import ...
from minigrad.datasets import imdb  # was: from keras.datasets import imdb

import _standin

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=20, help="epochs of the validation run (book: 20)")
parser.add_argument("--final-epochs", type=int, default=4,
                    help="epochs of the model retrained from scratch (book: 4)")
parser.add_argument("--data-dir", default=os.environ.get("MINIGRAD_DATASETS"),
                    help="folder holding imdb.npz (default: $MINIGRAD_DATASETS; nothing is "
                         "downloaded unless --download)")
parser.add_argument("--download", action="store_true",
                    help="look in the cache and download imdb.npz when absent")
parser.add_argument("--standin-samples", type=int, default=25000,
                    help="reviews per split of the stand-in data (the real set: 25000)")
parser.add_argument("--val-samples", type=int, default=10000,
                    help="the validation set taken from the training data (book: 10000)")
parser.add_argument("--seed", type=int, default=None,
                    help="utils.set_random_seed(seed) first (weights, shuffles, dropout masks)")
args = parser.parse_args()
if args.seed is not None:
    utils.set_random_seed(args.seed)

# ---- Listing 3.1: loading the IMDB dataset
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

print("train_data[0][:10]:", train_data[0][:10], "train_labels[0]:", train_labels[0])
print("max word index:", max([max(sequence) for sequence in train_data]))


# ---- Listing 3.2: encoding the integer sequences into a binary matrix
def vectorize_sequences(sequences, dimension=10000):
    results = np.zeros((len(sequences), dimension))
    for i, sequence in enumerate(sequences):
        results[i, sequence] = 1.
    return results


x_train = vectorize_sequences(train_data)
x_test = vectorize_sequences(test_data)
y_train = np.asarray(train_labels).astype('float32')
y_test = np.asarray(test_labels).astype('float32')

# ---- Listing 3.3: the model definition
model = models.Sequential()
model.add(layers.Dense(16, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(16, activation='relu'))
model.add(layers.Dense(1, activation='sigmoid'))

# ---- Listings 3.4-3.6: compiling (with a configured optimizer, loss and metric objects)
model.compile(optimizer=optimizers.RMSprop(learning_rate=0.001),
              loss=losses.binary_crossentropy,
              metrics=[metrics.binary_accuracy])

# ---- Listing 3.7: setting aside a validation set
num_val = args.val_samples  # the book: 10000
x_val = x_train[:num_val]
partial_x_train = x_train[num_val:]
y_val = y_train[:num_val]
partial_y_train = y_train[num_val:]

# ---- Listing 3.8: training the model
model.compile(optimizer='rmsprop',
              loss='binary_crossentropy',
              metrics=['acc'])
start = time.perf_counter()
history = model.fit(partial_x_train,
                    partial_y_train,
                    epochs=args.epochs,
                    batch_size=512,
                    validation_data=(x_val, y_val),
                    verbose=2)
seconds = time.perf_counter() - start
history_dict = history.history
print("history keys:", sorted(history_dict.keys()))

# ---- Listings 3.9-3.10: training and validation loss / accuracy (printed, not plotted)
print("epoch  loss    val_loss  acc     val_acc")
for epoch in range(len(history_dict['loss'])):
    print(f"{epoch + 1:5d}  {history_dict['loss'][epoch]:.4f}  {history_dict['val_loss'][epoch]:.4f}"
          f"    {history_dict['acc'][epoch]:.4f}  {history_dict['val_acc'][epoch]:.4f}")
best = int(np.argmin(history_dict['val_loss']))
print(f"lowest validation loss at epoch {best + 1} ({history_dict['val_loss'][best]:.4f}); "
      f"{args.epochs} epochs in {seconds:.1f} s")

# ---- Listing 3.11: retraining a model from scratch
model = models.Sequential()
model.add(layers.Dense(16, activation='relu', input_shape=(10000,)))
model.add(layers.Dense(16, activation='relu'))
model.add(layers.Dense(1, activation='sigmoid'))
model.compile(optimizer='rmsprop',
              loss='binary_crossentropy',
              metrics=['accuracy'])
model.fit(x_train, y_train, epochs=args.final_epochs, batch_size=512, verbose=2)
results = model.evaluate(x_test, y_test, verbose=0)
print("results (test loss, test accuracy):", results)

# ---- Using a trained network to generate predictions on new data
predictions = model.predict(x_test, verbose=0)
print("predictions[:5]:", predictions[:5].ravel())
print(f"test accuracy: {results[1]:.4f}")
sys.stdout.flush()
