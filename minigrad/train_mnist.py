"""Train the book's MNIST networks: ``python -m minigrad.train_mnist [--model convnet]``.

``--model mlp`` (the default): Dense(512, relu) -> Dense(10, softmax), batch 128
(Chollet, *Deep Learning with Python*, 2.1). ``--model convnet``: Conv2D(32, 3x3,
relu) -> MaxPooling2D -> Conv2D(64, 3x3, relu) -> MaxPooling2D -> Conv2D(64, 3x3,
relu) -> Flatten -> Dense(64, relu) -> Dense(10, softmax), batch 64 (5.1). Both:
RMSprop, categorical cross-entropy, 5 epochs. Prints the Keras-style progress,
the test loss and accuracy, seconds per epoch and training samples per second.

    python -m minigrad.train_mnist --epochs 5 --threads 4 --seed 0 --data /path/to/mnist

Exit status: 0 on success, 1 if the data set cannot be loaded (message on
stderr), 2 for bad command-line arguments.
"""
import argparse
import sys
import time

import numpy as np


def _int_at_least(minimum, what):
    """An argparse type: an integer >= minimum, else an "expected <what>" usage error."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, received {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), received {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minigrad.train_mnist",
                                description="Train the book's MNIST MLP or convnet with minigrad.")
    p.add_argument("--epochs", type=_positive_int, default=5, help="passes over the training set (5)")
    p.add_argument("--model", choices=("mlp", "convnet"), default="mlp",
                   help="the chapter 2 MLP (default) or the chapter 5 convnet")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="samples per step (128 for the MLP, 64 for the convnet)")
    p.add_argument("--learning-rate", type=_positive_float, default=0.001, help="RMSprop step size (0.001)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="kernel threads (default: OMP_NUM_THREADS or the usable CPUs)")
    p.add_argument("--seed", type=_non_negative_int, default=None,
                   help="random seed: same seed, same weights (default: not seeded)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="directory with the MNIST files (default: $MINIGRAD_DATA, the cache, or download)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 progress bar, 2 one line per epoch (1)")
    p.add_argument("--save-weights", metavar="FILE", default=None, help="write the trained weights (.npz)")
    p.add_argument("--plot", metavar="DIR", default=None,
                   help="write history.png (loss and accuracy per epoch, training and validation) "
                        "and misclassified.png (test digits the model got wrong); needs matplotlib")
    p.add_argument("--validation-split", type=_fraction, default=0.0, metavar="F",
                   help="hold out the last fraction F of the training set for validation (0)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)  # bad flags: usage on stderr, exit status 2

    import minigrad as mg
    from minigrad import callbacks, layers, models, optimizers, utils
    from minigrad.datasets import mnist

    try:
        (x_train, y_train), (x_test, y_test) = mnist.load_data(args.data)
    except (OSError, ValueError) as exc:  # missing, undownloadable or corrupt data
        print(f"train_mnist: error: could not load MNIST: {exc}", file=sys.stderr)
        return 1

    if args.threads is not None:
        mg.set_num_threads(args.threads)
    if args.seed is not None:
        utils.set_random_seed(args.seed)

    # scaled in place: `astype(...) / 255` would hold a second 188 MB copy at the peak
    sample = (28, 28, 1) if args.model == "convnet" else (28 * 28,)
    x_train = x_train.reshape((len(x_train),) + sample).astype("float32")
    x_train /= 255
    x_test = x_test.reshape((len(x_test),) + sample).astype("float32")
    x_test /= 255
    y_train, y_test = utils.to_categorical(y_train, 10), utils.to_categorical(y_test, 10)
    if args.batch_size is None:
        args.batch_size = 64 if args.model == "convnet" else 128

    network = models.Sequential()
    if args.model == "convnet":
        network.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
        network.add(layers.MaxPooling2D((2, 2)))
        network.add(layers.Conv2D(64, (3, 3), activation="relu"))
        network.add(layers.MaxPooling2D((2, 2)))
        network.add(layers.Conv2D(64, (3, 3), activation="relu"))
        network.add(layers.Flatten())
        network.add(layers.Dense(64, activation="relu"))
    else:
        network.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation="softmax"))
    network.compile(optimizer=optimizers.RMSprop(learning_rate=args.learning_rate),
                    loss="categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(callbacks.Callback):
        """Wall time of each epoch."""

        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    if args.verbose:
        print(f"minigrad {mg.__version__}: {mg.get_num_threads()} thread(s), "
              f"gemm kernel {mg.kernels.gemm_kernel_name()}", flush=True)
    if args.plot:
        try:
            from minigrad import plot  # fail before training, not after it
            plot._pyplot()
        except ImportError as exc:
            print(f"train_mnist: error: --plot: {exc}", file=sys.stderr)
            return 1
    try:
        history = network.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                               verbose=args.verbose, callbacks=[timer],
                               validation_split=args.validation_split)
    except KeyboardInterrupt:
        print("\ntrain_mnist: interrupted", file=sys.stderr)
        return 130
    test_loss, test_acc = network.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)

    # Time per epoch includes the progress callbacks (it is what a user waits for).
    per_epoch = sum(timer.seconds) / len(timer.seconds)
    print(f"test_loss: {test_loss:.4f} - test_acc: {test_acc:.4f}")
    print(f"seconds per epoch: {per_epoch:.2f} (mean of {len(timer.seconds)}), "
          f"samples/second: {len(x_train) / per_epoch:,.0f}")
    if args.plot:
        import os
        history_png = plot.plot_history(history, os.path.join(args.plot, "history.png"))
        predicted = network.predict(x_test, batch_size=args.batch_size, verbose=0)
        wrong = plot.plot_misclassified(x_test, y_test, predicted,
                                        os.path.join(args.plot, "misclassified.png"))
        print(f"pictures: {history_png} and {os.path.join(args.plot, 'misclassified.png')} "
              f"({wrong} misclassified digits shown)")
    if args.save_weights:
        try:
            network.save_weights(args.save_weights)
        except OSError as exc:
            print(f"train_mnist: error: could not save weights: {exc}", file=sys.stderr)
            return 1
        print(f"weights saved to {args.save_weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
