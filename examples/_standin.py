"""Stand-in data for the book's IMDB and Reuters programs, used only when the real files
(imdb.npz, reuters.npz) are absent: these machines cannot download them.

The stand-in data has the shapes and the format ``imdb.load_data`` / ``reuters.load_data``
return: 1-d object arrays of Python lists of word indices (each list starting with
start_char 1, indices shifted by index_from 3, words ranked by frequency, ranks at or above
``num_words`` replaced by the out-of-vocabulary index 2) and integer label arrays.

How it is made (fixed seed, so every run sees the same data):

- review lengths are log-normal, clipped to the real data set's range (IMDB: median about
  180 words, 11 to 2,494; Reuters: median about 95, 2 to 2,376);
- every word is drawn from a Zipf distribution over the real vocabulary size (88,584 words
  for IMDB, 30,979 for Reuters), so the frequent words dominate and the rare ones become
  index 2 under ``num_words=10000``, as in the real data;
- the label signal: with a small probability a word is replaced by one of a few hundred
  "class words" of the review's label (IMDB: positive or negative words; Reuters: 30 words
  per topic), so a model can learn the labels, well above chance but not perfectly;
- IMDB labels are balanced 0/1 (12,500 of each per split, as the real set); Reuters' 46
  topics follow a skewed distribution like the real one (the largest topic about a third
  of the wires, then about a fifth, then a long tail), so the random baseline is near the
  book's 18-19%.

This is NOT the real data: accuracies on it say that the programs and the engine work,
not what the book's models reach on real reviews and newswires.
"""
import numpy as np

START, OOV, INDEX_FROM = 1, 2, 3


def _zipf_sampler(vocabulary, exponent=1.0):
    ranks = np.arange(1, vocabulary + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -exponent)
    cdf /= cdf[-1]
    return lambda rng, n: np.searchsorted(cdf, rng.random(n), side="right") + 1  # ranks 1..V


def _sequences(rng, labels, median, low, high, vocabulary, class_words, signal, num_words):
    lengths = np.clip(np.round(rng.lognormal(np.log(median), 0.75, len(labels))),
                      low - 1, high - 1).astype(np.int64)  # words, without the start char
    total = int(lengths.sum())
    ranks = _zipf_sampler(vocabulary)(rng, total)
    owner = np.repeat(np.arange(len(labels)), lengths)
    replace = rng.random(total) < signal
    words = class_words[labels[owner[replace]]]  # (k, words per class)
    ranks[replace] = words[np.arange(len(words)), rng.integers(0, words.shape[1], len(words))]
    index = ranks + INDEX_FROM
    index[index >= num_words] = OOV
    out = np.empty(len(labels), dtype=object)
    for i, seq in enumerate(np.split(index, np.cumsum(lengths)[:-1])):
        out[i] = [START] + seq.tolist()
    return out


def imdb(num_words=10000, train=25000, test=25000, seed=2017, signal=0.012):
    """(train_data, train_labels), (test_data, test_labels) shaped like imdb.load_data's."""
    rng = np.random.default_rng(seed)
    # 150 positive and 150 negative words among the ranks 20..4000 (in the vocabulary)
    chosen = rng.choice(np.arange(20, 4000), size=300, replace=False)
    class_words = chosen.reshape(2, 150)
    splits = []
    for n in (train, test):
        labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
        data = _sequences(rng, labels, 178, 11, 2494, 88584, class_words, signal, num_words)
        splits.append((data, labels))
    return tuple(splits)


# Topic frequencies shaped like Reuters' (topic 3 'earn' the largest, then 4 'acq', ...)
def _topic_probabilities(rng, topics=46):
    weights = 1.0 / np.arange(1, topics + 1) ** 1.35
    order = np.concatenate([[3, 4, 19, 16, 1, 11, 13, 20, 8, 10, 9],
                            rng.permutation([t for t in range(topics)
                                             if t not in (3, 4, 19, 16, 1, 11, 13, 20, 8, 10, 9)])])
    p = np.empty(topics)
    p[order] = weights
    return p / p.sum()


def reuters(num_words=10000, train=8982, test=2246, seed=2017, signal=0.03):
    """(train_data, train_labels), (test_data, test_labels) shaped like reuters.load_data's."""
    rng = np.random.default_rng(seed)
    topics = 46
    chosen = rng.choice(np.arange(20, 6000), size=topics * 30, replace=False)
    class_words = chosen.reshape(topics, 30)
    p = _topic_probabilities(rng, topics)
    labels = rng.choice(topics, size=train + test, p=p).astype(np.int64)
    data = _sequences(rng, labels, 95, 2, 2376, 30979, class_words, signal, num_words)
    return (data[:train], labels[:train]), (data[train:], labels[train:])
