"""Finding, verifying and downloading data set files (shared by every loader).

One job: turn a data set's canonical file into a local path that is safe to
parse.  Parsing is each loader's business (``_npz`` reads archives).

Where :func:`locate` looks, in order:

1. ``path``, when it names an existing file or contains a directory part:
   that file, and nothing else;
2. ``data_dir`` (the loaders' keyword argument): the directory itself and its
   sub-directory named after the data set (``<data_dir>/boston_housing/``);
3. the directory named by ``MINIGRAD_DATASETS`` (same two places), e.g. a
   folder holding ``imdb.npz``, ``reuters.npz`` and ``boston_housing/``;
4. the cache, ``$MINIGRAD_HOME/datasets`` (default ``~/.cache/minigrad/datasets``);
5. an existing Keras download, ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``);
6. otherwise the canonical URL is downloaded into the cache.

``path`` and ``data_dir`` are explicit: when they hold no usable file the
loader raises ``FileNotFoundError`` rather than quietly downloading.
``MINIGRAD_DATASETS`` is a collection that may hold only some data sets, so a
data set missing from it falls through to the cache.  Files from explicit
places and ``MINIGRAD_DATASETS`` are checked against the published hash unless
the caller passes ``verify=False`` (own data in the same format, small test
files); the cache, the Keras cache and downloads are always checked, and a
download is checked before it is renamed into place.

MNIST has a search order of its own (``MINIGRAD_DATA``, documented in
``minigrad.datasets.mnist``); it shares the cache, the verification and the
download code below.

>>> import hashlib, tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "tiny.txt").write_bytes(b"hello")
>>> spec = FileSpec("tiny.txt", hashlib.sha256(b"hello").hexdigest(), max_size=100)
>>> path, found = locate("Tiny", "tiny.load_data", None, folder, [spec])
>>> path.name, found is spec
('tiny.txt', True)
"""

import contextlib
import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

ENV_VAR = "MINIGRAD_DATASETS"

# Replaceable in tests; called as urlopen(url, timeout=...).
urlopen = urllib.request.urlopen
TIMEOUT = 60  # seconds per blocking socket operation, not for the whole file
CHUNK = 1 << 20


class DatasetUnavailableError(OSError):
    """No copy of the data set could be found locally and downloading failed."""


class DatasetFormatError(ValueError):
    """A data file is truncated, corrupted or not in the expected format."""


class ChecksumMismatchError(DatasetFormatError):
    """A file does not have the published size or hash of the canonical file."""


@dataclasses.dataclass(frozen=True)
class FileSpec:
    """One canonical file of a data set.

    name: the file name looked for in every directory (and used in the cache).
    digest: the published hex digest, or None when none is published (then
        nothing is verified and the reader's structural checks stand alone).
    max_size: a bound on the file's size in bytes, above the real file's: a
        download streaming more is cut off, and readers size their limits on it.
    url: where to download it from; None for an offline-only format.
    algorithm: the hash the digest was published with ("sha256" or "md5").
    """

    name: str
    digest: str | None
    max_size: int
    url: str | None = None
    algorithm: str = "sha256"


# --------------------------------------------------------------------------
# Directories


def cache_dir():
    """``$MINIGRAD_HOME/datasets``, default ``~/.cache/minigrad/datasets``."""
    home = os.environ.get("MINIGRAD_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "minigrad"
    return base / "datasets"


def keras_dir():
    """Keras' download directory: ``$KERAS_HOME/datasets``, default ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".keras") / "datasets"


def make_cache_dir(directory):
    """Create the cache directory private to the user (0700), parents as needed."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        return  # keep whatever permissions the user chose for an existing one
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


# --------------------------------------------------------------------------
# Verification


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file, read in chunks."""
    digest = _hasher(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hasher(algorithm):
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "md5":
        # Keras publishes only an MD5 for some files: it catches truncation
        # and corruption, not a deliberate substitute, so those files are
        # also validated structurally after parsing.
        return hashlib.md5(usedforsecurity=False)
    raise ValueError(f"unsupported hash algorithm {algorithm!r}; expected 'sha256' or 'md5'")


def verify_file(path, digest, *, algorithm="sha256", size=None, dataset, override):
    """Raise ChecksumMismatchError unless `path` has the published size and digest.

    `override` says how a user passes deliberately different data (it ends
    the message, after "pass it via").
    """
    name = "SHA-256" if algorithm == "sha256" else algorithm.upper()
    actual_size = path.stat().st_size
    # Compare sizes first: cheap, and avoids hashing a huge impostor.
    if size is not None and actual_size != size:
        problem = f"has {actual_size} bytes, the published file has {size}"
    else:
        actual = file_digest(path, algorithm)
        if actual == digest:
            return
        problem = f"has {name} {actual}, the published value is {digest}"
    raise ChecksumMismatchError(
        f"{path} {problem}: it is corrupted, truncated or not the canonical "
        f"{dataset} file. Delete it and call load_data() again to re-download it "
        "(or copy in a good version). If it is deliberately different data in "
        f"the same format, pass it via {override} with verify=False."
    )


# --------------------------------------------------------------------------
# Download


def download(url, dest, digest, max_size=None, opener=None, timeout=TIMEOUT, algorithm="sha256"):
    """Download `url` to `dest` atomically, verifying the digest first.

    `digest` None (nothing published) verifies nothing but the size bound.

    Data goes to a temporary file in the destination directory, is checked
    (size bound and hash), fsynced and only then renamed over `dest`.  On any
    failure, including KeyboardInterrupt, the temporary file is removed, so
    no partial or unverified file is ever left behind.
    """
    dest = Path(dest)
    opener = opener or urlopen
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + ".", suffix=".part")
    try:
        hasher = _hasher(algorithm)
        received = 0
        with os.fdopen(fd, "wb") as out:
            with opener(url, timeout=timeout) as response:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    if max_size is not None and received > max_size:
                        raise DatasetFormatError(
                            f"{url}: more than the expected {max_size} bytes; refusing")
                    hasher.update(chunk)
                    out.write(chunk)
            if digest is not None and hasher.hexdigest() != digest:
                name = "SHA-256" if algorithm == "sha256" else algorithm.upper()
                raise ChecksumMismatchError(
                    f"{url}: downloaded data ({received} bytes) has {name} "
                    f"{hasher.hexdigest()}, expected {digest}; discarded")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError):
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------
# The search


def _search(directory, dataset_dir, specs):
    """(path, spec) of the first spec found in `directory` or its data set sub-directory."""
    for folder in (directory, directory / dataset_dir):
        for spec in specs:
            candidate = folder / spec.name
            if candidate.is_file():
                return candidate, spec
    return None


def _check(path, spec, dataset, verify, override):
    if verify and spec.digest is not None:
        verify_file(path, spec.digest, algorithm=spec.algorithm, dataset=dataset, override=override)
    return path


def locate(dataset, where, path, data_dir, specs, *, verify=True, dataset_dir=None):
    """The local path of a data set file, downloading it into the cache if needed.

    dataset: the data set's name in messages ("IMDB").
    where: the calling function in messages ("imdb.load_data").
    path: Keras' ``path`` argument: None (use the first spec's name), a bare
        file name (looked up in every directory below under that name), or
        the path of a file (used alone).
    data_dir: a directory to search instead of the environment and the cache.
    specs: the accepted files, preferred first; the first one with a ``url``
        is the one downloaded.
    dataset_dir: the sub-directory name searched under ``data_dir`` and
        ``MINIGRAD_DATASETS`` (default: the first spec's name without suffix).

    Returns (Path, FileSpec): the file and the spec it matched, so that a
    caller accepting several formats knows which one it got.
    """
    specs = list(specs)
    dataset_dir = dataset_dir or Path(specs[0].name).stem
    override = f"path=, data_dir= or {ENV_VAR}"
    return _locate(dataset, where, path, data_dir, specs, verify, dataset_dir, override)


def _locate(dataset, where, path, data_dir, specs, verify, dataset_dir, override):
    names = ", ".join(s.name for s in specs)
    if path is not None:
        given = Path(os.fspath(path)).expanduser()
        if given.is_file() or len(given.parts) != 1:
            # An explicit file: never replaced by anything else.
            spec = next((s for s in specs if s.name == given.name), None) or next(
                (s for s in specs if Path(s.name).suffix == given.suffix), None)
            if spec is None:
                raise FileNotFoundError(
                    f"{where}: path={str(path)!r} is not a {dataset} file: expected a file "
                    f"named like {names}")
            if not given.is_file():
                raise FileNotFoundError(
                    f"{where}: {dataset} file {str(given)!r} (the path argument) does not "
                    "exist; nothing is downloaded for an explicit path. Pass an existing "
                    f"file, or a bare name such as {specs[0].name!r} to use the cache.")
            return _check(given, spec, dataset, verify, override), spec
        # A bare name: Keras' cache file name, searched for (and downloaded)
        # under that name, in the format its suffix names.
        same = next((s for s in specs if Path(s.name).suffix == given.suffix), specs[0])
        specs = [dataclasses.replace(same, name=given.name)] + [s for s in specs if s is not same]
        names = ", ".join(s.name for s in specs)

    if data_dir is not None:
        directory = Path(os.fspath(data_dir)).expanduser()
        hit = _search(directory, dataset_dir, specs) if directory.is_dir() else None
        if hit is None:
            raise FileNotFoundError(
                f"{where}: no {dataset} file in data_dir={str(directory)!r}: expected one of "
                f"{names} in it or in its sub-directory {dataset_dir}/. Nothing is downloaded "
                "for an explicit directory; without data_dir, the cache "
                f"({cache_dir()}) and automatic download are used.")
        _check(hit[0], hit[1], dataset, verify, override)
        return hit

    searched = []
    env = os.environ.get(ENV_VAR)
    if env:
        directory = Path(env).expanduser()
        searched += [f"{directory} ({ENV_VAR})", f"{directory / dataset_dir} ({ENV_VAR})"]
        hit = _search(directory, dataset_dir, specs) if directory.is_dir() else None
        if hit is not None:
            _check(hit[0], hit[1], dataset, verify, override)
            return hit

    # The cache and Keras' cache are always verified: nobody chose those
    # files explicitly, so a corrupted one must not be used silently.
    for directory in (cache_dir(), keras_dir()):
        searched.append(str(directory))
        for spec in specs:
            candidate = directory / spec.name
            if candidate.is_file():
                return _check(candidate, spec, dataset, True, override), spec

    remote = next((s for s in specs if s.url), None)
    cache = cache_dir()
    errors = []
    if remote is not None:
        make_cache_dir(cache)
        try:
            print(f"minigrad: downloading {remote.url}", file=sys.stderr)
            download(remote.url, cache / remote.name, remote.digest, remote.max_size,
                     algorithm=remote.algorithm)
            return cache / remote.name, remote
        except (OSError, ValueError, http.client.HTTPException) as e:
            # OSError covers URLError, HTTPError and timeouts; ValueError a
            # bad checksum or an oversized response; HTTPException a broken
            # connection mid-response.
            errors.append(f"  {remote.url}: {e}")
    raise DatasetUnavailableError(
        f"{where}: {dataset} is not available locally (searched "
        + ", ".join(searched) + ")"
        + (" and could not be downloaded:\n" + "\n".join(errors) if errors else "")
        + f"\nTo use {dataset} offline, put {names}"
        + (f" (downloaded elsewhere from {remote.url})" if remote is not None else "")
        + f" into the cache directory {cache}, "
        f"or into a directory passed as data_dir= or named by {ENV_VAR} "
        f"(directly or in its {dataset_dir}/ sub-directory)."
    )
