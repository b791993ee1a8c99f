"""JPEG decoding against Pillow, the ImageNet-style transforms against
Pillow/NumPy references, list files and folder trees, the loader over JPEG
files, and every bad-input case of issue 4."""
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid

import numpy as np
import pytest
from PIL import Image, ImageFile

import lade
from lade import data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JPEG_ARCHIVE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "cifar10-jpeg.tar.gz")
CACHE = os.path.join(REPO_ROOT, ".cache")  # git-ignored

# Decoded pixels vs Pillow: both use libjpeg-turbo with the accurate integer
# IDCT and fancy upsampling, so they should agree exactly; allowed: at most 1
# level on any pixel and a mean difference under 0.01 levels.
DECODE_MAX_DIFF = 1
DECODE_MEAN_DIFF = 0.01
# Resizing vs Pillow's BILINEAR: lade filters in float, Pillow rounds to uint8
# between the horizontal and vertical passes, so results differ by < 1 level.
RESIZE_MAX_DIFF = 1.0 / 255 + 1e-6


def cifar10_jpeg():
    """The extracted cifar10-jpeg folder under .cache/ (extracted once, atomically)."""
    target = os.path.join(CACHE, "cifar10-jpeg")
    if not os.path.isfile(os.path.join(target, "test.txt")):
        tmp = os.path.join(CACHE, f"extract-{uuid.uuid4().hex}")
        os.makedirs(tmp)
        with tarfile.open(JPEG_ARCHIVE, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.rename(os.path.join(tmp, "cifar10-jpeg"), target)
        except OSError:  # another process got there first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def jpeg_root():
    return cifar10_jpeg()


def random_photo(h, w, seed=0):
    """A smooth random image (JPEG-friendly), uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((max(h // 8, 2), max(w // 8, 2), 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def jpeg_bytes(image, **kw):
    ImageFile.MAXBLOCK = 1 << 24
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


def assert_decode_close(got, ref):
    assert got.shape == ref.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= DECODE_MAX_DIFF and diff.mean() <= DECODE_MEAN_DIFF


# ---------------------------------------------------------------------- decoding

def test_decode_matches_pillow_on_real_files(jpeg_root):
    for line in open(os.path.join(jpeg_root, "test.txt")).read().splitlines()[::25]:
        path = os.path.join(jpeg_root, line.split()[0])
        assert_decode_close(data.read_jpeg(path), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("mode,kw", [
    ("RGB", dict(subsampling=0)), ("RGB", dict(subsampling=1)), ("RGB", dict(subsampling=2)),
    ("RGB", dict(progressive=True)), ("L", {}), ("L", dict(progressive=True)), ("CMYK", dict(subsampling=0)),
])
def test_decode_color_spaces_match_pillow(mode, kw):
    image = Image.fromarray(random_photo(123, 177)).convert(mode)
    blob = jpeg_bytes(image, quality=90, **kw)
    got = data.decode_jpeg(blob)
    assert got.shape == (123, 177, 3)
    assert_decode_close(got, np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
    if mode == "L":
        assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()


def test_decode_bad_data():
    blob = jpeg_bytes(Image.fromarray(random_photo(64, 80)))
    png = io.BytesIO()
    Image.fromarray(random_photo(8, 8)).save(png, "PNG")
    corrupt = bytearray(blob)
    corrupt[len(blob) // 2:len(blob) // 2 + 40] = b"\xff\xd9" * 20
    cases = [
        (b"", "empty file"),
        (png.getvalue(), "not a JPEG: the data is a PNG image"),
        (b"GIF89a" + bytes(20), "GIF"),
        (b"hello world", "not a JPEG: starts with bytes 68 65"),
        (blob[:3], "ends inside the header"),
        (blob[:len(blob) // 2], "Premature end of JPEG file"),
        (blob[:-2], "Premature end"),
        (bytes(corrupt), "corrupt or truncated JPEG"),
    ]
    for bad, match in cases:
        with pytest.raises(lade.DecodeError, match=match) as e:
            data.decode_jpeg(bad)
        assert str(e.value).startswith("lade.data.decode_jpeg: ")
    with pytest.raises(OSError, match="cannot open '/nonexistent/x.jpg': No such file"):
        data.read_jpeg("/nonexistent/x.jpg")


# ---------------------------------------------------------------- transforms

def plain(tf_class, **kw):
    """A transform with identity normalisation (and no jitter) to compare pixels."""
    return tf_class(mean=(0, 0, 0), std=(1, 1, 1), **kw)


def test_resized_crop_box_and_resize_match_pillow():
    image = random_photo(300, 400, seed=1)
    tf = plain(data.ImageNetTrain, size=224, brightness=0, contrast=0, saturation=0)
    flips, areas, ratios = [], [], []
    for s in range(400):
        p = tf.params(300, 400, seed=3, stream=s)
        top, left, h, w = p["box"]
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        areas.append(h * w / 120000)
        ratios.append(w / h)
        flips.append(p["flip"])
        assert p["brightness"] == p["contrast"] == p["saturation"] == 1.0
        if s < 6:
            ref = Image.fromarray(image).crop((left, top, left + w, top + h)).resize((224, 224), Image.BILINEAR)
            ref = np.asarray(ref, np.float32) / 255
            if p["flip"]:
                ref = ref[:, ::-1]
            got = data.augment_image(image, tf, seed=3, stream=s).transpose(1, 2, 0)
            assert np.abs(got - ref).max() <= RESIZE_MAX_DIFF
    areas, ratios = np.array(areas), np.array(ratios)
    # scale (0.08, 1) and ratio (3/4, 4/3) up to rounding to whole pixels
    assert areas.min() > 0.075 and areas.max() <= 1 and ratios.min() > 0.74 and ratios.max() < 1.35
    assert 0.4 < np.mean(flips) < 0.6
    # the accepted areas follow torchvision's rejection sampling, simulated here
    sim = np.random.default_rng(0)
    ref_areas = []
    while len(ref_areas) < 4000:
        area = 120000 * sim.uniform(0.08, 1)
        aspect = np.exp(sim.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < w <= 400 and 0 < h <= 300:
            ref_areas.append(w * h / 120000)
    assert abs(np.median(areas) - np.median(ref_areas)) < 0.06


def test_resized_crop_fallback_centre_crop():
    tf = data.ImageNetTrain(size=32)
    # 10 x 1000 admits no crop of the allowed ratios: the fallback is a centre
    # crop of height 10 and width round(10 * 4/3) = 13
    p = tf.params(10, 1000, seed=0, stream=0)
    assert p["box"] == (0, (1000 - 13) // 2, 10, 13)
    p = tf.params(1000, 10, seed=0, stream=0)
    assert p["box"] == ((1000 - 13) // 2, 0, 13, 10)


def test_eval_resize_and_centre_crop_match_pillow():
    tf = plain(data.ImageNetEval, resize=256, crop=224)
    for h, w in [(300, 400), (401, 300), (32, 32), (257, 1000), (256, 225)]:
        image = random_photo(h, w, seed=h)
        p = tf.params(h, w)
        rh, rw = p["resized"]
        short, long_ = (rh, rw) if h <= w else (rw, rh)
        assert short == 256 and long_ == int(256 * max(h, w) / min(h, w))
        top, left = p["box"][:2]
        assert (top, left) == (int(round((rh - 224) / 2)), int(round((rw - 224) / 2)))
        ref = Image.fromarray(image).resize((rw, rh), Image.BILINEAR).crop((left, top, left + 224, top + 224))
        got = data.augment_image(image, tf).transpose(1, 2, 0)
        assert np.abs(got - np.asarray(ref, np.float32) / 255).max() <= RESIZE_MAX_DIFF


def numpy_jitter(x, p):
    """torchvision's tensor ColorJitter on float (3, H, W) in [0, 1]."""
    def grey(t):
        return 0.2989 * t[0] + 0.587 * t[1] + 0.114 * t[2]
    for op in p["jitter_order"]:
        if op == 0:
            x = np.clip(x * p["brightness"], 0, 1)
        elif op == 1:
            x = np.clip(p["contrast"] * x + (1 - p["contrast"]) * grey(x).mean(), 0, 1)
        else:
            x = np.clip(p["saturation"] * x + (1 - p["saturation"]) * grey(x)[None], 0, 1)
    return x


def test_color_jitter_and_normalisation():
    image = random_photo(60, 70, seed=5)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    tf = data.ImageNetTrain(size=48)
    unjittered = plain(data.ImageNetTrain, size=48, brightness=0, contrast=0, saturation=0)
    orders = set()
    for s in range(40):
        p = tf.params(60, 70, seed=9, stream=s)
        orders.add(p["jitter_order"])
        for k in ("brightness", "contrast", "saturation"):
            assert 0.6 <= p[k] <= 1.4
        q = unjittered.params(60, 70, seed=9, stream=s)
        assert (q["box"], q["flip"]) == (p["box"], p["flip"])  # the crop draws come first
        base = data.augment_image(image, unjittered, seed=9, stream=s).astype(np.float64)
        ref = (numpy_jitter(base, p) - mean[:, None, None]) / std[:, None, None]
        got = data.augment_image(image, tf, seed=9, stream=s)
        np.testing.assert_allclose(got, ref, atol=2e-5)
    assert len(orders) == 6  # all permutations occur


def test_batch_augment_hwc_and_chw_agree():
    image = random_photo(40, 50, seed=2)
    tf = data.ImageNetTrain(size=24)
    batch = np.ascontiguousarray(np.stack([image, image[::-1]]).transpose(0, 3, 1, 2))
    out = data.augment(batch, tf, seed=4, stream=10)
    np.testing.assert_array_equal(out[0], data.augment_image(image, tf, seed=4, stream=10))
    np.testing.assert_array_equal(out[1], data.augment_image(np.ascontiguousarray(image[::-1]), tf, seed=4,
                                                             stream=11))


def test_transform_argument_checks():
    with pytest.raises(ValueError, match="scale must satisfy"):
        data.ImageNetTrain(scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="resize must be >= the crop size"):
        data.ImageNetEval(resize=100, crop=224)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        data.CifarTest(std=(1, 0, 1))


# ------------------------------------------------------------ list files, folders

def test_list_file_and_folder_on_real_set(jpeg_root):
    lf = data.ListFile(os.path.join(jpeg_root, "test.txt"), num_classes=10)
    assert len(lf) == 10000 and lf.num_classes == 10
    assert lf[0] == ("test/airplane/0000.jpg", 0)
    assert np.bincount(lf.labels).tolist() == [1000] * 10
    folder = data.ImageFolder(os.path.join(jpeg_root, "test"))
    assert folder.classes == open(os.path.join(jpeg_root, "classes.txt")).read().split()
    assert len(folder) == 10000 and folder[0] == ("airplane/0000.jpg", 0)
    np.testing.assert_array_equal(folder.labels, lf.labels)


def test_list_file_parsing(tmp_path):
    text = ("a/one.jpg 0\n\n  b/with space.jpg\t2  \r\n"  # blank line, a path with a space, CRLF
            "c/three.jpg +1\n")
    (tmp_path / "l.txt").write_text(text)
    lf = data.ListFile(tmp_path / "l.txt", root="/imgs")
    assert [lf[i] for i in range(3)] == [("a/one.jpg", 0), ("b/with space.jpg", 2), ("c/three.jpg", 1)]
    assert lf.num_classes == 3 and lf.root == "/imgs"
    bad = [
        ("x.jpg 0\ny.jpg\n", lade.DecodeError, "line 2: expected 'path label', got 'y.jpg' .missing label"),
        ("x.jpg 0\ny.jpg cat\n", lade.DecodeError, "line 2: label 'cat' of 'y.jpg' is not an integer"),
        ("x.jpg 1.5\n", lade.DecodeError, "line 1: label '1.5'"),
        ("x.jpg 99999999999999999999999\n", lade.DecodeError, "not an integer in range"),
        ("x.jpg 0\n\nz.jpg 10\n", ValueError, r"line 3: label 10 of 'z.jpg' is outside \[0, 10\)"),
        ("x.jpg -1\n", ValueError, "line 1: label -1 of 'x.jpg' is outside"),
    ]
    for content, exc, match in bad:
        (tmp_path / "bad.txt").write_text(content)
        with pytest.raises(exc, match=match) as e:
            data.ListFile(tmp_path / "bad.txt", num_classes=10)
        assert str(e.value).startswith(f"lade.data.ListFile: {tmp_path / 'bad.txt'} line ")


# ------------------------------------------------------------------ loader on files

@pytest.fixture
def bad_set(tmp_path, jpeg_root):
    """A list file with one good image per line except the named bad ones."""
    good = open(os.path.join(jpeg_root, "test", "cat", "0000.jpg"), "rb").read()
    png = io.BytesIO()
    Image.fromarray(random_photo(32, 32)).save(png, "PNG")
    scan = good.find(b"\xff\xda")  # damage the entropy-coded data after the start of scan
    corrupt = bytearray(good)
    corrupt[scan + 100:scan + 130] = b"\xff\xd9" * 15
    files = {"good0.jpg": good, "truncated.jpg": good[:scan + 100], "corrupt.jpg": bytes(corrupt),
             "png.jpg": png.getvalue(), "empty.jpg": b"", "good1.jpg": good}
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    names = ["good0.jpg", "truncated.jpg", "corrupt.jpg", "png.jpg", "empty.jpg", "missing.jpg", "good1.jpg"]
    (tmp_path / "list.txt").write_text("".join(f"{n} 3\n" for n in names))
    return tmp_path, names


def test_loader_reports_each_bad_file_with_its_line(bad_set):
    root, names = bad_set
    expected = {
        "truncated.jpg": (lade.DecodeError, "Premature end of JPEG file"),
        "corrupt.jpg": (lade.DecodeError, "Corrupt JPEG data: premature end of data segment"),
        "png.jpg": (lade.DecodeError, "not a JPEG: the data is a PNG image"),
        "empty.jpg": (lade.DecodeError, "empty file .0 bytes"),
        "missing.jpg": (OSError, "cannot open .*missing.jpg': No such file or directory"),
    }
    lf = data.ListFile(root / "list.txt")
    for line, name in enumerate(names, start=1):
        if name not in expected:
            continue
        exc, match = expected[name]
        order = np.array([0, line - 1], np.int64)

        class Fixed:
            def __len__(self):
                return 2

            def epoch_indices(self, epoch):
                return order

        with data.Loader(lf, 2, data.ImageNetEval(40, 32), sampler=Fixed(), num_workers=2) as loader:
            with pytest.raises(exc, match=match) as e:
                next(iter(loader))
        message = str(e.value)
        assert message.startswith(f"lade.data.Loader: {root / 'list.txt'} line {line}: ")
        assert name in message


def test_loader_skip_bad_counts_and_shortens_batches(bad_set):
    root, names = bad_set
    lf = data.ListFile(root / "list.txt")
    with data.Loader(lf, 7, data.ImageNetEval(40, 32), shuffle=False, skip_bad=True) as loader:
        (x, y), = list(loader)
        assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 3]
        assert loader.skipped == 5 and "line" in loader.last_skip_reason
    np.testing.assert_array_equal(x[0], x[1])
    expected = data.augment_image(data.read_jpeg(root / "good0.jpg"), data.ImageNetEval(40, 32))
    np.testing.assert_array_equal(x[0], expected)


def test_loader_on_files_deterministic_and_matches_direct_path(tmp_path, jpeg_root):
    lines = open(os.path.join(jpeg_root, "test.txt")).read().splitlines()[::50]  # 200 files
    (tmp_path / "sub.txt").write_text("\n".join(lines) + "\n")
    lf = data.ListFile(tmp_path / "sub.txt", root=jpeg_root, num_classes=10)
    tf = data.ImageNetTrain(size=48)
    runs = []
    for workers in (1, 3):
        with data.Loader(lf, 32, tf, seed=2, num_workers=workers, drop_last=False) as loader:
            runs.append([(x.copy(), y.copy()) for x, y in loader])
    assert len(runs[0]) == 7 and len(runs[0][-1][1]) == 8
    for (x0, y0), (x1, y1) in zip(*runs):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)

    class Fixed:
        def __len__(self):
            return 200

        def epoch_indices(self, epoch):
            return np.arange(199, -1, -1, dtype=np.int64)

    with data.Loader(lf, 50, tf, sampler=Fixed(), seed=2, start_epoch=1) as loader:
        x, y = next(iter(loader))
    for k in (0, 17, 49):
        path, label = lf[199 - k]
        assert y[k] == label
        ref = data.augment_image(data.read_jpeg(os.path.join(jpeg_root, path)), tf, seed=2, stream=1 * 200 + k)
        np.testing.assert_array_equal(x[k], ref)
    folder = data.ImageFolder(os.path.join(jpeg_root, "test"))
    with data.Loader(folder, 16, data.ImageNetEval(36, 32)) as loader:
        x, y = next(iter(loader))
        assert x.shape == (16, 3, 32, 32) and np.isfinite(x).all() and len(loader) == 625


def test_a_fifo_directory_or_device_entry_is_refused_by_name_without_blocking(tmp_path, jpeg_root):
    """Issue 28: a FIFO entry blocked the worker in open() for good, and close() after Ctrl-C never
    returned. Run in a child process so that a regression fails on the timeout instead of hanging."""
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "folder.jpg").mkdir()
    os.symlink("/dev/null", tmp_path / "device.jpg")
    shutil.copy(os.path.join(jpeg_root, "test", "cat", "0000.jpg"), tmp_path / "good.jpg")
    os.symlink(tmp_path / "good.jpg", tmp_path / "link.jpg")  # a symlink to a regular file is read
    (tmp_path / "list.txt").write_text("good.jpg 0\nlink.jpg 0\nfifo.jpg 1\nfolder.jpg 1\ndevice.jpg 1\n")
    script = f"""
import numpy as np
from lade import data
lf = data.ListFile({str(tmp_path / "list.txt")!r})
for line in (3, 4, 5):
    class Fixed:
        def __len__(self):
            return 2
        def epoch_indices(self, epoch):
            return np.array([1, line - 1], np.int64)
    loader = data.Loader(lf, 2, data.ImageNetEval(40, 32), sampler=Fixed())
    try:
        next(iter(loader))
    except OSError as e:
        print(e)
    loader.close()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout
    for message, line, name, kind in zip(lines, (3, 4, 5), ("fifo", "folder", "device"),
                                         ("a FIFO", "a directory", "a character device")):
        assert message.startswith(f"lade.data.Loader: {tmp_path / 'list.txt'} line {line}: ")
        assert f"{name}.jpg' is {kind}, not a regular file" in message


def test_folder_errors_name_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.JPG").write_bytes(b"")
    (tmp_path / "b" / "y.jpeg").write_bytes(jpeg_bytes(Image.fromarray(random_photo(20, 20))))
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    folder = data.ImageFolder(tmp_path)
    assert folder.classes == ["a", "b"] and len(folder) == 2 and folder[1] == ("b/y.jpeg", 1)
    with data.Loader(folder, 2, data.ImageNetEval(24, 16), shuffle=False) as loader:
        with pytest.raises(lade.DecodeError, match=r"sample 0: '.*a/x.JPG': empty file"):
            next(iter(loader))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        data.ImageFolder(tmp_path / "nope")


def test_image_folder_takes_one_string_as_one_extension(tmp_path):
    """Issue 28: extensions='.jpg' was read as the characters '.', 'j', 'p', 'g' and listed .png and .p files."""
    (tmp_path / "a").mkdir()
    for name in ("x.jpg", "y.png", "z.p", "w.JPG"):
        (tmp_path / "a" / name).write_bytes(b"")
    assert [f for f, _ in data.ImageFolder(tmp_path, extensions=".jpg")] == ["a/w.JPG", "a/x.jpg"]
    assert [f for f, _ in data.ImageFolder(tmp_path, extensions=[".png", ".p"])] == ["a/y.png", "a/z.p"]
    for bad in ("", (), [".jpg", 3], 5, None):
        with pytest.raises(TypeError, match=r"lade.data.ImageFolder: argument 'extensions' must be a non-empty "
                                            r"string or a non-empty sequence of them, got"):
            data.ImageFolder(tmp_path, extensions=bad)
