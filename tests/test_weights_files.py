"""Weights files: load_weights never unpickles, reads headers before data, and rejects
every malformed file with a ValueError naming it and the problem, changing no weight;
save_weights is atomic; optimizer state round-trips."""
import io
import os
import stat
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from minigrad import layers, models, utils
from helpers import assert_bitwise_equal

F32 = np.float32
KEYS = ["layer0/bias", "layer0/kernel", "layer1/bias", "layer1/kernel"]
SHAPES = {"layer0/kernel": (20, 16), "layer0/bias": (16,), "layer1/kernel": (16, 3), "layer1/bias": (3,)}


def toy_model(seed=0, optimizer="rmsprop", built=True):
    utils.set_random_seed(seed)
    model = models.Sequential([
        layers.Dense(16, activation="relu", input_shape=(20,) if built else None),
        layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def good_arrays(seed=1):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(F32) for k, s in SHAPES.items()}


def npy_bytes(array, allow_pickle=False):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def write_npz(path, members, compression=zipfile.ZIP_STORED):
    """members: key -> array or raw .npy bytes."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for key, value in members.items():
            z.writestr(key + ".npy", value if isinstance(value, bytes) else npy_bytes(value))
    return path


def forged_npy(shape, descr="<f4", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def assert_rejected(model, path, match, error=ValueError):
    """load_weights raises `error` naming the file and matching `match`; nothing changes."""
    before = model.get_weights() if model.built else None
    iterations = model.optimizer.iterations
    with pytest.raises(error, match=match) as info:
        model.load_weights(path)
    assert str(path) in str(info.value)
    if before is None:
        assert not model.built
    else:
        for i, (a, b) in enumerate(zip(before, model.get_weights())):
            assert_bitwise_equal(b, a, f"weight {i}")
    assert model.optimizer.iterations == iterations


# ---------------------------------------------------------------- accepted files

def test_round_trip_and_file_written_by_np_savez(tmp_path):
    arrays = good_arrays()
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    for name in ("a.npz", "c.npz"):
        model = toy_model()
        model.load_weights(tmp_path / name)
        for key, (_, _, t) in zip([k for k, *_ in model._weight_keys()], model._weight_keys()):
            assert_bitwise_equal(t.data, arrays[key], key)


@pytest.mark.parametrize("convert", [
    lambda a: a.astype(np.float64), lambda a: a.astype(np.float16), lambda a: a.astype(">f4"),
    lambda a: np.asfortranarray(a)], ids=["float64", "float16", "big-endian", "fortran-order"])
def test_float_dtypes_and_layouts_are_cast_to_float32(tmp_path, convert):
    arrays = good_arrays()
    write_npz(tmp_path / "w.npz", {k: convert(v) for k, v in arrays.items()})
    model = toy_model()
    model.load_weights(tmp_path / "w.npz")
    for (key, _, t) in model._weight_keys():
        assert t.data.dtype == F32 and t.data.flags.c_contiguous
        assert_bitwise_equal(t.data, convert(arrays[key]).astype(F32), key)


def test_unbuilt_model_builds_from_the_headers(tmp_path):
    write_npz(tmp_path / "w.npz", good_arrays())
    model = toy_model(built=False)
    model.load_weights(tmp_path / "w.npz")
    assert model.built and model.layers[0].kernel.shape == (20, 16)


# ---------------------------------------------------------------- rejected files

@pytest.mark.parametrize("cut", [0.5, 0.99, 22, 1])
def test_truncated_file(tmp_path, cut):
    toy_model(seed=5).save_weights(tmp_path / "w.npz")
    data = (tmp_path / "w.npz").read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else len(data) - cut
    (tmp_path / "t.npz").write_bytes(data[:n])
    assert_rejected(toy_model(), tmp_path / "t.npz", r"not a readable \.npz archive")


@pytest.mark.parametrize("content", [b"", b"hello, this is not a zip file\n" * 10,
                                     b"PK\x03\x04" + b"\0" * 40])
def test_not_a_zip_file(tmp_path, content):
    (tmp_path / "w.npz").write_bytes(content)
    assert_rejected(toy_model(), tmp_path / "w.npz", r"not a readable \.npz archive")
    assert_rejected(toy_model(built=False), tmp_path / "w.npz", r"not a readable \.npz archive")


def test_single_npy_file(tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3, F32))
    assert_rejected(toy_model(), tmp_path / "w.npy", r"expected an \.npz archive.*single \.npy")


def test_missing_file_is_an_os_error(tmp_path):
    assert_rejected(toy_model(), tmp_path / "nope.npz", "No such file", FileNotFoundError)


class Boom:
    """Unpickling this would record it (a real payload would run code)."""
    unpickled = []

    def __reduce__(self):
        return (Boom.unpickled.append, ("unpickled!",))


def test_pickled_object_member_is_never_unpickled(tmp_path):
    arrays = good_arrays()
    payload = np.empty(SHAPES["layer0/kernel"], dtype=object)
    payload[...] = Boom()
    members = dict(arrays, **{"layer0/kernel": npy_bytes(payload, allow_pickle=True)})
    write_npz(tmp_path / "w.npz", members)
    assert_rejected(toy_model(), tmp_path / "w.npz", r"layer0/kernel to hold floats.*dtype object")
    assert_rejected(toy_model(built=False), tmp_path / "w.npz", r"layer0/kernel to hold floats")
    assert Boom.unpickled == []


@pytest.mark.parametrize("key, shape", [("layer0/kernel", (20, 17)), ("layer1/bias", (4,)),
                                        ("layer1/kernel", (48,)), ("layer0/bias", ())])
def test_wrong_shape(tmp_path, key, shape):
    arrays = good_arrays()
    arrays[key] = np.zeros(shape, F32)
    write_npz(tmp_path / "w.npz", arrays)
    assert_rejected(toy_model(), tmp_path / "w.npz",
                    rf"expected {key} \(layer \"\w+\"\) of shape .*received shape {re_tuple(shape)}")


def re_tuple(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64, "U3", "V4",
                                   [("a", F32)], np.longdouble])
def test_wrong_dtype(tmp_path, dtype):
    arrays = good_arrays()
    arrays["layer1/kernel"] = np.zeros(SHAPES["layer1/kernel"], dtype=dtype)
    write_npz(tmp_path / "w.npz", arrays)
    assert_rejected(toy_model(), tmp_path / "w.npz", r"expected layer1/kernel to hold floats "
                                                     r"\(float16/32/64, cast to float32\), received dtype")


def test_float64_outside_float32_range(tmp_path):
    arrays = good_arrays()
    arrays["layer0/bias"] = arrays["layer0/bias"].astype(np.float64)
    arrays["layer0/bias"][3] = 1e300
    write_npz(tmp_path / "w.npz", arrays)
    assert_rejected(toy_model(), tmp_path / "w.npz",
                    r"layer0/bias holds float64 values outside the float32 range")


def test_missing_and_extra_keys_are_listed(tmp_path):
    arrays = good_arrays()
    del arrays["layer1/bias"]
    write_npz(tmp_path / "m.npz", arrays)
    assert_rejected(toy_model(), tmp_path / "m.npz", r"different architecture.*missing: \['layer1/bias'\]$")
    arrays = dict(good_arrays(), **{"layer2/kernel": np.zeros(3, F32), "zzz": np.zeros(1, F32)})
    write_npz(tmp_path / "e.npz", arrays)
    assert_rejected(toy_model(), tmp_path / "e.npz", r"unexpected: \['layer2/kernel', 'zzz'\]$")
    assert_rejected(toy_model(built=False), tmp_path / "e.npz", r"unexpected: \['layer2/kernel', 'zzz'\]$")


def test_non_npy_member_and_duplicates(tmp_path):
    with zipfile.ZipFile(tmp_path / "w.npz", "w") as z:
        for k, v in good_arrays().items():
            z.writestr(k + ".npy", npy_bytes(v))
        z.writestr("readme.txt", b"hi")
    assert_rejected(toy_model(), tmp_path / "w.npz", r"unexpected member 'readme\.txt'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(tmp_path / "d.npz", "w") as z:
            for k, v in good_arrays().items():
                z.writestr(k + ".npy", npy_bytes(v))
            z.writestr("layer0/bias.npy", npy_bytes(np.ones(16, F32)))
    assert_rejected(toy_model(), tmp_path / "d.npz", r"holds 'layer0/bias\.npy' twice")


@pytest.mark.parametrize("shape", [(2**40,), (2**31, 2**31), (20, 2**40)])
def test_forged_header_with_a_huge_shape_allocates_nothing(tmp_path, shape):
    arrays = good_arrays()
    members = dict(arrays, **{"layer0/kernel": forged_npy(shape, data=b"\0" * 64)})
    write_npz(tmp_path / "w.npz", members)
    model = toy_model()
    tracemalloc.start()
    try:
        assert_rejected(model, tmp_path / "w.npz", r"expected layer0/kernel .*received shape")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak allocation {peak} bytes"
    # An unbuilt model takes its input size from layer0/kernel, so (2**40, 16) fits the
    # architecture: the header must still agree with the bytes the member holds.
    write_npz(tmp_path / "u.npz", dict(arrays, **{"layer0/kernel": forged_npy((2**40, 16))}))
    tracemalloc.start()
    try:
        assert_rejected(toy_model(built=False), tmp_path / "u.npz",
                        r"layer0/kernel's header declares shape \(1099511627776, 16\) of float32 "
                        r"\(70368744177664 bytes\) but the archive member holds 0 bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak allocation {peak} bytes"


@pytest.mark.parametrize("size", [10, 65])
def test_member_data_shorter_or_longer_than_its_header(tmp_path, size):
    members = dict(good_arrays(), **{"layer0/bias": forged_npy((16,), data=b"\0" * size)})
    write_npz(tmp_path / "w.npz", members)
    assert_rejected(toy_model(), tmp_path / "w.npz",
                    r"layer0/bias's header declares shape \(16,\) of float32 \(64 bytes\) "
                    rf"but the archive member holds {size} bytes")


def test_zip_directory_claiming_more_data_than_stored(tmp_path):
    """Header and the zip's declared size agree, but the stored bytes are fewer."""
    members = dict(good_arrays(), **{"layer0/bias": forged_npy((16,), data=b"\0" * 10)})
    data = bytearray(write_npz(tmp_path / "w.npz", members).read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:  # central directory entries: patch the uncompressed size of layer0/bias
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + name_len] == b"layer0/bias.npy":
            struct.pack_into("<I", data, pos + 24, struct.unpack_from("<I", data, pos + 24)[0] + 54)
        pos = data.find(b"PK\x01\x02", pos + 4)
    (tmp_path / "x.npz").write_bytes(bytes(data))
    assert_rejected(toy_model(), tmp_path / "x.npz",
                    r"layer0/bias is not a readable \.npy array.*the data ends 54 bytes short of the 64")


@pytest.mark.parametrize("header", [b"\x93NUMPY\x01\x00" + b"\xff\xff" + b"{" * 100,
                                    b"not an npy member at all",
                                    b"\x93NUMPY\x09\x00\x10\x00{}"])
def test_garbage_npy_headers(tmp_path, header):
    members = dict(good_arrays(), **{"layer1/kernel": header})
    write_npz(tmp_path / "w.npz", members)
    assert_rejected(toy_model(), tmp_path / "w.npz", r"layer1/kernel is not a readable \.npy array")


def test_corrupted_compressed_member(tmp_path):
    write_npz(tmp_path / "w.npz", good_arrays(), compression=zipfile.ZIP_DEFLATED)
    data = bytearray((tmp_path / "w.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "w.npz") as z:
        info = z.getinfo("layer0/kernel.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + info.compress_size // 2, start + info.compress_size // 2 + 16):
        data[i] ^= 0x5A
    (tmp_path / "x.npz").write_bytes(bytes(data))
    assert_rejected(toy_model(), tmp_path / "x.npz", r"layer0/kernel is not a readable \.npy array")


# ---------------------------------------------------------------- saving

def test_save_weights_is_atomic(tmp_path, monkeypatch):
    model, path = toy_model(seed=1), tmp_path / "w.npz"
    model.save_weights(path)
    good = path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]  # no temporary file left behind

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        toy_model(seed=2).save_weights(path)
    monkeypatch.undo()
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["w.npz"]
    old_umask = os.umask(0o022)
    try:
        model.save_weights(tmp_path / "m.npz")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o644  # not mkstemp's 0600


def test_optimizer_state_round_trip_and_mismatches(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((128, 20)).astype(F32), rng.integers(0, 3, 128)
    model = toy_model(optimizer="adam")
    model.fit(x, y, batch_size=32, verbose=0)
    model.save_weights(tmp_path / "o.npz", include_optimizer=True)
    with np.load(tmp_path / "o.npz") as f:
        assert sorted(f.files) == sorted(KEYS + ["optimizer/iterations"] + [
            f"optimizer/{k}/{s}" for k in KEYS for s in ("m", "v")])
    same = toy_model(seed=3, optimizer="adam")
    same.load_weights(tmp_path / "o.npz")
    assert same.optimizer.iterations == 4
    for a, b in zip(model.optimizer.variables(), same.optimizer.variables()):
        assert_bitwise_equal(b, a, "slot")
    # another optimizer: clear error, nothing changed
    assert_rejected(toy_model(optimizer="rmsprop"), tmp_path / "o.npz",
                    r"optimizer state does not fit this model's RMSprop.*unexpected")
    # not compiled: weights load, optimizer state is skipped with a warning
    bare = models.Sequential([layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
    with pytest.warns(UserWarning, match="holds optimizer state but the model is not compiled"):
        bare.load_weights(tmp_path / "o.npz")
    for a, b in zip(model.get_weights(), bare.get_weights()):
        assert_bitwise_equal(b, a, "weight")
    with pytest.raises(ValueError, match="include_optimizer=True needs a compiled model"):
        bare.save_weights(tmp_path / "b.npz", include_optimizer=True)
    # forged optimizer entries are checked like weights
    with np.load(tmp_path / "o.npz") as f:
        arrays = {k: f[k] for k in f.files}
    for key, value, match in [("optimizer/iterations", np.float32(3), "integer scalar"),
                              ("optimizer/layer0/kernel/m", forged_npy((2**40,)), "received shape"),
                              ("optimizer/layer0/kernel/m", np.zeros((20, 16), np.int64), "hold floats")]:
        write_npz(tmp_path / "f.npz", dict(arrays, **{key: value}))
        assert_rejected(toy_model(optimizer="adam"), tmp_path / "f.npz", match)
    del arrays["optimizer/layer1/bias/v"]
    write_npz(tmp_path / "p.npz", arrays)
    assert_rejected(toy_model(optimizer="adam"), tmp_path / "p.npz", "incomplete slots")
