"""CIFAR readers (binary and pickle, archive and folder), the CIFAR transforms
and the in-memory loader: determinism, samplers, epochs, shutdown."""
import gc
import io
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

import lade
from lade import data, sampling

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "cifar-100-binary.tar.gz")
RECORD = 2 + 3072
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.2023, 0.1994, 0.2010], np.float32)


@pytest.fixture(scope="module")
def raw100():
    """The first records of the real train.bin and test.bin, as raw bytes."""
    out = {}
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for m in tar:
            if m.name.endswith(("train.bin", "test.bin")):
                f = tar.extractfile(m)
                out[os.path.basename(m.name)[:-4]] = f.read(RECORD * 600)
    return out


def numpy_records(raw, kind=100):
    rec = np.frombuffer(raw, np.uint8).reshape(-1, RECORD if kind == 100 else RECORD - 1)
    return rec[:, -3072:].reshape(-1, 3, 32, 32), rec[:, : kind // 100 + 1].astype(np.int64)


def write_tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def write_folder(root, files):
    for name, blob in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as f:
            f.write(blob)


def test_real_archive_matches_numpy_parse():
    images, fine = data.load_cifar(ARCHIVE, "train")
    assert images.shape == (50000, 3, 32, 32) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert fine.dtype == np.int64 and np.bincount(fine).tolist() == [500] * 100
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        m = next(m for m in tar if m.name.endswith("train.bin"))
        raw = tar.extractfile(m).read()
    ref_images, ref_labels = numpy_records(raw)
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(fine, ref_labels[:, 1])
    test_images, coarse = data.load_cifar(ARCHIVE, "test", label="coarse")
    assert test_images.shape == (10000, 3, 32, 32) and np.bincount(coarse).tolist() == [500] * 20


@pytest.mark.parametrize("as_archive", [False, True])
def test_binary_layouts(tmp_path, raw100, as_archive):
    train, test = raw100["train"][: RECORD * 50], raw100["test"][: RECORD * 20]
    # CIFAR-10 binary: one label byte, drop CIFAR-100's coarse byte and map labels below 10
    rec = np.frombuffer(train, np.uint8).reshape(-1, RECORD)[:, 1:].copy()
    rec[:, 0] %= 10
    c10 = [rec[i * 10:(i + 1) * 10].tobytes() for i in range(5)]
    files = {"cifar-100-binary/train.bin": train, "cifar-100-binary/test.bin": test}
    files10 = {f"cifar-10-batches-bin/data_batch_{i + 1}.bin": c10[i] for i in range(5)}
    files10["cifar-10-batches-bin/test_batch.bin"] = c10[0]
    for name, fs in (("c100", files), ("c10", files10)):
        if as_archive:
            write_tar(tmp_path / f"{name}.tar.gz", fs)
        else:
            write_folder(tmp_path / name, fs)
    where = (lambda n: tmp_path / f"{n}.tar.gz") if as_archive else (lambda n: tmp_path / n)
    images, fine = data.load_cifar(where("c100"), "train")
    ref_images, ref_labels = numpy_records(train)
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(fine, ref_labels[:, 1])
    _, coarse = data.load_cifar(where("c100"), "test", "coarse")
    np.testing.assert_array_equal(coarse, numpy_records(test)[1][:, 0])
    images10, labels10 = data.load_cifar(where("c10"), "train")
    np.testing.assert_array_equal(images10, ref_images)
    np.testing.assert_array_equal(labels10, rec[:, 0])
    with pytest.raises(ValueError, match="CIFAR-10 .no coarse"):
        data.load_cifar(where("c10"), "train", "coarse")
    if not as_archive:  # the extracted folder itself works too
        np.testing.assert_array_equal(data.load_cifar(tmp_path / "c100" / "cifar-100-binary", "test")[0],
                                      numpy_records(test)[0])


def make_pickle(pixels, labels, key):
    return pickle.dumps({b"batch_label": b"x", key: list(map(int, labels)), b"data": pixels}, protocol=2)


@pytest.mark.parametrize("as_archive", [False, True])
def test_pickle_layouts(tmp_path, raw100, as_archive):
    images, labels = numpy_records(raw100["train"][: RECORD * 60])
    flat = np.ascontiguousarray(images.reshape(60, 3072))
    files = {
        "cifar-100-python/train": pickle.dumps(
            {b"data": flat, b"fine_labels": list(map(int, labels[:, 1])),
             b"coarse_labels": list(map(int, labels[:, 0]))}, protocol=2),
        "cifar-100-python/test": pickle.dumps(
            {b"data": flat[:7], b"fine_labels": list(map(int, labels[:7, 1])),
             b"coarse_labels": list(map(int, labels[:7, 0]))}, protocol=2),
    }
    for i in range(5):
        files[f"cifar-10-batches-py/data_batch_{i + 1}"] = make_pickle(flat[i * 12:(i + 1) * 12],
                                                                       labels[i * 12:(i + 1) * 12, 1] % 10, b"labels")
    files["cifar-10-batches-py/test_batch"] = make_pickle(flat[:5], labels[:5, 1] % 10, b"labels")
    if as_archive:
        write_tar(tmp_path / "py.tar.gz", files)
        where = tmp_path / "py.tar.gz"
    else:
        write_folder(tmp_path / "py", files)
        where = tmp_path / "py"
    # the archive holds both layouts; CIFAR-100 is found first
    x, y = data.load_cifar(where, "train", "coarse")
    assert x.shape == (60, 3, 32, 32) and x.dtype == np.uint8 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels[:, 0])
    if not as_archive:
        x10, y10 = data.load_cifar(tmp_path / "py" / "cifar-10-batches-py", "train")
        np.testing.assert_array_equal(x10, images)
        np.testing.assert_array_equal(y10, labels[:, 1] % 10)


def test_pickle_rejects_code_and_bad_content(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    for blob, match in [
        (pickle.dumps({b"data": Evil(), b"labels": []}), "not allowed"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"label\[1\] = 10"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), r"\(N, 3072\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})[:-20], "not a readable"),
    ]:
        write_folder(tmp_path / "p", {f"cifar-10-batches-py/{n}": blob for n in ["test_batch"]})
        with pytest.raises(ValueError, match=match) as e:
            data.load_cifar(tmp_path / "p", "test")
        assert "test_batch" in str(e.value) and str(e.value).startswith("lade.data.load_cifar")


def test_truncated_and_bad_binary(tmp_path, raw100):
    good = raw100["test"][: RECORD * 4]
    cases = [
        (good[:-1], lade.DecodeError, r"truncated CIFAR-100 batch: 12295 bytes .* \(3 full records and 3073 bytes"),
        (b"", lade.DecodeError, "empty CIFAR-100 batch"),
        (bytes([0, 100]) + good[2:], lade.DecodeError, "record 0 has fine label 100"),
    ]
    for blob, exc, match in cases:
        write_folder(tmp_path / "b", {"cifar-100-binary/train.bin": good, "cifar-100-binary/test.bin": blob})
        with pytest.raises(exc, match=match) as e:
            data.load_cifar(tmp_path / "b", "test")
        assert "test.bin" in str(e.value)
    write_tar(tmp_path / "t.tar.gz", {"cifar-100-binary/test.bin": good[:100]})
    with pytest.raises(lade.DecodeError, match=r"t.tar.gz:cifar-100-binary/test.bin'.*truncated"):
        data.load_cifar(tmp_path / "t.tar.gz", "test")
    with pytest.raises(FileNotFoundError, match="no CIFAR train batches"):
        data.load_cifar(tmp_path / "t.tar.gz", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_cifar(tmp_path / "missing.tar.gz")
    with pytest.raises(ValueError, match="'split' must be"):
        data.load_cifar(tmp_path / "b", "val")


# ------------------------------------------------------------------ CIFAR transforms

def coordinate_images(n=4):
    """Images whose pixels tell where they came from: value = 3y + 5x + 40c + i (mod 256)."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return np.stack([(3 * y + 5 * x + 40 * c + i) % 256 for i in range(n)]).astype(np.uint8)


def reference_cifar_train(image, box, flip):
    padded = np.zeros((3, 40, 40), np.float32)
    padded[:, 4:36, 4:36] = image
    top, left = box[0], box[1]
    crop = padded[:, top:top + 32, left:left + 32]
    if flip:
        crop = crop[:, :, ::-1]
    return (crop / 255 - CIFAR_MEAN[:, None, None]) / CIFAR_STD[:, None, None]


def test_cifar_train_geometry():
    images = coordinate_images(6)
    tf = data.CifarTrain()
    out = tf(images, seed=7, stream=100)
    tops, flips = [], []
    for i in range(6):
        p = tf.params(32, 32, seed=7, stream=100 + i)
        assert p["box"][2:] == (32, 32) and 0 <= p["box"][0] <= 8 and 0 <= p["box"][1] <= 8
        np.testing.assert_allclose(out[i], reference_cifar_train(images[i], p["box"], p["flip"]), atol=1e-5)
    for s in range(2000):
        p = tf.params(32, 32, seed=1, stream=s)
        tops.append(p["box"][0] * 9 + p["box"][1])
        flips.append(p["flip"])
    counts = np.bincount(tops, minlength=81)
    assert counts.min() > 5 and counts.max() < 50  # all 81 offsets, roughly uniform (mean 24.7)
    assert 0.45 < np.mean(flips) < 0.55
    # the extreme offsets, checked by hand: (0, 0) puts 4 zero-padding rows and
    # columns first; (8, 8) puts them last, and the flip moves the columns to the left
    image = coordinate_images(1)
    streams = {tf.params(32, 32, 1, s)["box"][:2] + (tf.params(32, 32, 1, s)["flip"],): s for s in range(2000)}
    zero = -CIFAR_MEAN / CIFAR_STD  # a padded pixel after normalisation
    out = tf(image, seed=1, stream=streams[(0, 0, False)])[0]
    np.testing.assert_allclose(out[:, :4, :], np.broadcast_to(zero[:, None, None], (3, 4, 32)), atol=1e-6)
    np.testing.assert_allclose(out[:, 4:, 4:] * CIFAR_STD[:, None, None] + CIFAR_MEAN[:, None, None],
                               image[0, :, :28, :28] / 255, atol=1e-6)
    out = tf(image, seed=1, stream=streams[(8, 8, True)])[0]
    np.testing.assert_allclose(out[:, 28:, :], np.broadcast_to(zero[:, None, None], (3, 4, 32)), atol=1e-6)
    np.testing.assert_allclose(out[:, :, :4], np.broadcast_to(zero[:, None, None], (3, 32, 4)), atol=1e-6)
    # the crop's columns 0..27 (source columns 4..31) land reversed in output columns 31..4
    np.testing.assert_allclose(out[:, :28, 4:][:, :, ::-1] * CIFAR_STD[:, None, None] + CIFAR_MEAN[:, None, None],
                               image[0, :, 4:, 4:] / 255, atol=1e-6)


def test_cifar_test_transform_and_augment_out():
    images = coordinate_images(3)
    out = np.full((3, 3, 32, 32), np.nan, np.float32)
    assert data.augment(images, data.CifarTest(), out=out) is out
    np.testing.assert_allclose(out, (images / 255 - CIFAR_MEAN[:, None, None]) / CIFAR_STD[:, None, None],
                               atol=1e-5)
    with pytest.raises(ValueError, match="lade.data.augment: argument 'out' must have shape"):
        data.augment(images, data.CifarTest(), out=np.empty((3, 3, 30, 32), np.float32))
    with pytest.raises(TypeError, match="argument 'images' must have dtype uint8"):
        data.augment(images.astype(np.float32), data.CifarTest())
    with pytest.raises(ValueError, match="image is 16 x 16, the transform expects 32 x 32"):
        data.augment(np.zeros((1, 3, 16, 16), np.uint8), data.CifarTest())


# ------------------------------------------------------------------------- loader

class ListSampler:
    """A sampler in the long-tail issue's interface, from a fixed RNG."""

    def __init__(self, n, length, seed):
        self.n, self.length, self.seed = n, length, seed

    def __len__(self):
        return self.length

    def epoch_indices(self, epoch):
        return np.random.default_rng([self.seed, epoch]).integers(0, self.n, self.length).astype(np.int64)


@pytest.fixture(scope="module")
def small_cifar(raw100):
    return numpy_records(raw100["train"][: RECORD * 300])[0].copy(), numpy_records(raw100["train"][: RECORD * 300])[1][:, 1].copy()


def collect(loader, epochs=1):
    out = []
    for _ in range(epochs):
        out += [(x.copy(), y.copy()) for x, y in loader]
    return out


def test_loader_matches_augment_with_streams(small_cifar):
    images, labels = small_cifar
    sampler = ListSampler(len(images), 130, seed=3)
    with data.Loader((images, labels), 32, data.CifarTrain(), sampler=sampler, seed=11, num_workers=2,
                     start_epoch=2) as loader:
        assert len(loader) == 4
        batches = collect(loader)
        assert loader.epoch == 3
    idx = sampler.epoch_indices(2)
    assert len(batches) == 4
    for b, (x, y) in enumerate(batches):
        pos = np.arange(b * 32, (b + 1) * 32)
        np.testing.assert_array_equal(y, labels[idx[pos]])
        # sample p of epoch 2 draws from stream 2 * 130 + p
        for k, p in enumerate(pos[:5]):
            ref = data.augment(images[idx[p]][None], data.CifarTrain(), seed=11, stream=2 * 130 + p)
            np.testing.assert_array_equal(x[k], ref[0])


def test_loader_default_order_is_the_instance_sampler(small_cifar):
    """Without a sampler the loader gives InstanceSampler(N, seed)'s order: the training
    application passes that sampler in every case (MPI shards and file subsets too), and a
    single-process CIFAR run keeps the order it had when it left the order to the loader."""
    images, labels = small_cifar
    for seed in (0, 11, 2 ** 40):
        own = data.Loader((images, labels), 32, data.CifarTrain(), seed=seed, num_workers=2)
        given = data.Loader((images, labels), 32, data.CifarTrain(), seed=seed, num_workers=2,
                            sampler=sampling.InstanceSampler(len(labels), seed=seed))
        with own, given:
            for (x0, y0), (x1, y1) in zip(collect(own, epochs=2), collect(given, epochs=2), strict=True):
                np.testing.assert_array_equal(y0, y1)
                np.testing.assert_array_equal(x0, x1)


def test_loader_deterministic_across_threads_and_runs(small_cifar):
    images, labels = small_cifar
    runs = []
    for workers, prefetch in [(1, 1), (2, 4), (3, 2), (2, 4)]:
        with data.Loader((images, labels), 64, data.CifarTrain(), seed=5, num_workers=workers,
                         prefetch=prefetch) as loader:
            runs.append(collect(loader, epochs=2))
    for run in runs[1:]:
        assert len(run) == len(runs[0]) == 8
        for (x0, y0), (x1, y1) in zip(runs[0], run):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)
    # epochs are different shuffles, each a permutation minus the dropped remainder
    e0 = np.concatenate([y for _, y in runs[0][:4]])
    e1 = np.concatenate([y for _, y in runs[0][4:]])
    assert len(e0) == 256 and not np.array_equal(e0, e1)
    with data.Loader((images, labels), 64, data.CifarTrain(), seed=6) as other:
        assert not np.array_equal(next(iter(other))[1], runs[0][0][1])


def test_loader_epochs_resume_and_partial_batches(small_cifar):
    images, labels = small_cifar
    with data.Loader((images, labels), 64, data.CifarTest(), seed=1) as a:
        collect(a, 2)
        third = collect(a)
    with data.Loader((images, labels), 64, data.CifarTest(), seed=1, start_epoch=2) as b:
        resumed = collect(b)
        b.set_epoch(2)
        again = collect(b)
        # iter() in the middle of an epoch restarts it
        b.set_epoch(2)
        it = iter(b)
        next(it)
        restarted = collect(b)
    for got in (resumed, again, restarted):
        for (x0, y0), (x1, y1) in zip(third, got):
            np.testing.assert_array_equal(x0, x1)
            np.testing.assert_array_equal(y0, y1)
    with data.Loader((images, labels), 64, data.CifarTest(), shuffle=False, drop_last=False) as c:
        assert len(c) == 5
        batches = collect(c)
    assert [len(y) for _, y in batches] == [64, 64, 64, 64, 44]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    np.testing.assert_allclose(batches[4][0], data.augment(images[256:], data.CifarTest()))


def test_loader_bad_arguments(small_cifar):
    images, labels = small_cifar
    with pytest.raises(ValueError, match=r"indices\[1\] = 300 is outside \[0, 300\)"):
        bad = ListSampler(300, 4, 0)
        bad.epoch_indices = lambda e: np.array([0, 300, 1, 2], np.int64)
        with data.Loader((images, labels), 2, data.CifarTest(), sampler=bad) as l:
            next(iter(l))
    with pytest.raises(TypeError, match="'labels' must have dtype int64"):
        data.Loader((images, labels.astype(np.int32)), 2, data.CifarTest())
    with pytest.raises(ValueError, match="'labels' must have shape \\(300,\\)"):
        data.Loader((images, labels[:5]), 2, data.CifarTest())
    with pytest.raises(ValueError, match=r"label\[0\] = -1"):
        data.Loader((images, np.full(300, -1, np.int64)), 2, data.CifarTest())
    with pytest.raises(ValueError, match="argument 'batch_size' must be >= 1, got 0"):
        data.Loader((images, labels), 0, data.CifarTest())
    with pytest.raises(TypeError, match="'transform' must be a lade.data.Transform"):
        data.Loader((images, labels), 2, lambda x: x)
    with pytest.raises(ValueError, match="returned 3 indices, but len\\(sampler\\) is 4"):
        short = ListSampler(300, 4, 0)
        short.epoch_indices = lambda e: np.array([0, 1, 2], np.int64)
        next(iter(data.Loader((images, labels), 2, data.CifarTest(), sampler=short)))


def test_c_loader_checks_every_output_and_holds_its_sources(small_cifar):
    """The C loader refuses outputs of the wrong shape (it would copy a whole batch into
    them) and keeps the arrays it reads alive by itself, without the Python wrapper."""
    images, labels = small_cifar
    loader = lade._C.Loader(data.CifarTest(), 8, images=images.copy(), labels=labels.copy(), num_workers=1,
                            prefetch=1)
    loader.begin(0, np.arange(len(labels), dtype=np.int64))
    with pytest.raises(ValueError, match=r"Loader: argument 'images' must have shape \(8, 3, 32, 32\)"):
        loader.next(images=np.empty((4, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"Loader: argument 'labels' must have shape \(8,\)"):
        loader.next(labels=np.empty(7, np.int64))
    with pytest.raises(ValueError, match=r"argument 'images' must have shape \(8, 3, 32, 32\)"):
        loader.next(images=np.empty((8, 3, 16, 16), np.float32))
    gc.collect()  # the copies above have no other owner than the loader
    out_images, out_labels = np.empty((8, 3, 32, 32), np.float32), np.empty(8, np.int64)
    got_images, got_labels = loader.next(images=out_images, labels=out_labels)
    assert np.shares_memory(got_images, out_images) and np.shares_memory(got_labels, out_labels)
    np.testing.assert_array_equal(got_labels, labels[:8])
    np.testing.assert_allclose(got_images, data.augment(images[:8], data.CifarTest()))
    loader.close()


def thread_count():
    return len(os.listdir("/proc/self/task"))


def settled_thread_count(expected, timeout=5.0):
    """The thread count once it reaches `expected`, or after `timeout` seconds.

    pthread_join returns when the kernel clears the thread's id, which is before the kernel removes the
    thread from /proc/self/task; for a moment a joined thread is still listed (seen once in CI).
    """
    deadline = time.monotonic() + timeout
    while (count := thread_count()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def test_loader_shutdown_close_gc_and_exceptions(small_cifar):
    images, labels = small_cifar
    base = thread_count()
    loader = data.Loader((images, labels), 16, data.CifarTrain(), num_workers=3)
    assert thread_count() == base + 3
    next(iter(loader))
    loader.close()
    loader.close()
    assert settled_thread_count(base) == base
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(loader))
    # garbage collection of an abandoned, running loader
    loader = data.Loader((images, labels), 16, data.CifarTrain(), num_workers=2)
    next(iter(loader))
    del loader
    gc.collect()
    assert settled_thread_count(base) == base
    # an exception inside the with block
    with pytest.raises(ZeroDivisionError):
        with data.Loader((images, labels), 16, data.CifarTrain(), num_workers=2) as loader:
            for _ in loader:
                1 / 0
    assert settled_thread_count(base) == base


_CTRL_C_CHILD = """
import signal, sys, time
import numpy as np
from lade import data
# as in a terminal: a test runner started in the background (nohup, &) passes SIGINT on ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
images = np.random.default_rng(0).integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)
labels = np.arange(200, dtype=np.int64) % 10
big = data.ImageNetTrain(size=1024)  # ~0.1 s per sample: a batch of 64 takes seconds
loader = data.Loader((images, labels), 64, big, num_workers=1, prefetch=1)
print("waiting", flush=True)
start = time.monotonic()
try:
    next(iter(loader))
    print("no interrupt", flush=True)
    sys.exit(1)
except KeyboardInterrupt:
    interrupted = time.monotonic() - start
loader.close()
print(f"interrupted {interrupted:.3f} closed {time.monotonic() - start:.3f}", flush=True)
"""


def test_loader_keyboard_interrupt():
    """A real Ctrl-C (SIGINT) while waiting for a slow batch: KeyboardInterrupt arrives promptly,
    and close() stops the workers without waiting for the batch. In a fresh interpreter, so that
    no other test's signal handling is in the way."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = REPO_ROOT
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "waiting", proc.stderr.read()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    words = out.split()
    assert words[0] == "interrupted" and float(words[1]) < 2.0 and float(words[3]) < 3.0, out
