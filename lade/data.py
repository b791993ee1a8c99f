"""Image data: CIFAR readers, JPEG list files and folder trees, augmentation and
a threaded batch loader. All parsing, decoding and augmenting is in C
(csrc/data/: cifar.c, listfile.c, jpeg.c, augment.c, loader.c); this module checks
arguments, allocates outputs and calls it.

    images, labels = lade.data.load_cifar("cifar-100-binary.tar.gz", "train")
    with lade.data.Loader((images, labels), 128, lade.data.CifarTrain(), seed=0) as loader:
        for x, y in loader:          # x float32 (128, 3, 32, 32), y int64 (128,)
            ...

Randomness: sample p (its position in the epoch's order) of epoch e draws from
the stream (seed, e * n + p), so batches are the same whatever the number of
worker threads or their timing.
"""
import bz2
import gzip
import io
import lzma
import os
import pickle
import tarfile
import zlib

import numpy as np

from lade import _C, _args
from lade._C import DecodeError

__all__ = [
    "load_cifar", "CifarTrain", "CifarTest", "ImageNetTrain", "ImageNetEval", "Transform",
    "augment", "augment_image", "decode_jpeg", "read_jpeg", "ListFile", "ImageFolder", "Loader",
    "DecodeError", "open_tar", "set_jpeg_max_pixels", "jpeg_max_pixels",
]


def _path(path, func, arg="path"):
    """A str path from str, bytes or os.PathLike (bytes decoded as the OS does), else TypeError naming func."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"{func}: argument '{arg}' must be a path (str, bytes or os.PathLike), got "
                        f"{type(path).__name__}") from None


# ------------------------------------------------------------------------- archives

_DECOMPRESSORS = ((b"\x1f\x8b", "gzip", gzip.decompress), (b"BZh", "bzip2", bz2.decompress),
                  (b"\xfd7zXZ\x00", "xz", lzma.decompress))


def open_tar(path, func="lade.data.open_tar"):
    """Opens a .tar, .tar.gz, .tar.bz2 or .tar.xz archive after checking all of it: the whole stream
    is decompressed first, so the compressor's checksum (gzip CRC-32 and length, bzip2 and xz CRCs)
    is verified, and every tar header's checksum is checked by reading the member list to the end.
    A truncated or damaged archive raises lade.DecodeError naming the file. Returns a TarFile over
    the checked bytes in memory."""
    path = _path(path, func)
    with open(path, "rb") as f:
        raw = f.read()
    for magic, kind, decompress in _DECOMPRESSORS:
        if raw.startswith(magic):
            try:
                raw = decompress(raw)
            except (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as e:
                raise DecodeError(f"{func}: '{path}' is a damaged or truncated {kind} file ({type(e).__name__}: "
                                  f"{e})") from None
            break
    try:
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
        members = tar.getmembers()
    except tarfile.TarError as e:
        raise DecodeError(f"{func}: '{path}' is not a readable tar archive ({e})") from None
    # tarfile ends the listing quietly at a header whose checksum is wrong; the rest must be zero padding
    end = tar.offset
    if raw[end:].strip(b"\0"):
        after = members[-1].name if members else "the start"
        raise DecodeError(f"{func}: '{path}': the tar header at byte {end} (after '{after}') is damaged "
                          f"(bad checksum); {len(raw) - end} bytes of the archive cannot be read")
    return tar


# ---------------------------------------------------------------------------- CIFAR

# file names of the four official layouts: (kind, pickled, train files, test files)
_CIFAR_LAYOUTS = {
    "cifar-100-binary": (100, False, ["train.bin"], ["test.bin"]),
    "cifar-10-batches-bin": (10, False, [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
    "cifar-100-python": (100, True, ["train"], ["test"]),
    "cifar-10-batches-py": (10, True, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: dicts, lists, strings and NumPy arrays, nothing
    that could run other code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def _cifar_files(path, split):
    """Finds the batch files of `split` in a folder or a .tar.gz archive.
    Returns (kind, pickled, [(name, size, read)]) where read() gives the bytes."""
    fn = "lade.data.load_cifar"
    path = _path(path, fn)
    if os.path.isdir(path):
        for layout, (kind, pickled, train, test) in _CIFAR_LAYOUTS.items():
            for folder in (path, os.path.join(path, layout)):
                names = train if split == "train" else test
                files = [os.path.join(folder, n) for n in names]
                if all(os.path.isfile(f) for f in files):
                    return kind, pickled, [(f, os.path.getsize(f), _file_reader(f)) for f in files]
        raise FileNotFoundError(
            f"{fn}: no CIFAR {split} batches in '{path}' (looked for the layouts {', '.join(_CIFAR_LAYOUTS)})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{fn}: '{path}' does not exist")
    tar = open_tar(path, fn)
    members = {}
    for m in tar.getmembers():
        parts = m.name.strip("/").split("/")
        if m.isfile() and len(parts) >= 2:
            members[(parts[-2], parts[-1])] = m
    for layout, (kind, pickled, train, test) in _CIFAR_LAYOUTS.items():
        names = train if split == "train" else test
        found = [members.get((layout, n)) for n in names]
        if all(found):
            def reader(m):
                return lambda: tar.extractfile(m).read()
            return kind, pickled, [(f"{path}:{m.name}", m.size, reader(m)) for m in found]
    tar.close()
    raise FileNotFoundError(f"{fn}: no CIFAR {split} batches in archive '{path}' "
                            f"(looked for the layouts {', '.join(_CIFAR_LAYOUTS)})")


def _file_reader(name):
    def read():
        with open(name, "rb") as f:
            return f.read()
    return read


def _unpickle_batch(name, data, kind, label):
    fn = f"lade.data.load_cifar: '{name}'"
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DecodeError(f"{fn}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from None
    key = b"labels" if kind == 10 else b"fine_labels" if label == "fine" else b"coarse_labels"
    if not isinstance(batch, dict) or b"data" not in batch or key not in batch:
        raise DecodeError(f"{fn}: expected a dict with keys b'data' and {key!r}")
    pixels = batch[b"data"]
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == 3 * 32 * 32 and pixels.flags.c_contiguous):
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DecodeError(f"{fn}: b'data' must be a C-contiguous uint8 array (N, 3072), got {got}")
    try:
        labels = np.array(batch[key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DecodeError(f"{fn}: {key!r} is not a list of integers ({e})") from None
    if labels.shape != (pixels.shape[0],):
        raise DecodeError(f"{fn}: {key!r} has shape {labels.shape}, expected ({pixels.shape[0]},)")
    _C.check_labels(labels, 10 if kind == 10 else 100 if label == "fine" else 20, name)
    return pixels.reshape(-1, 3, 32, 32), labels


def load_cifar(path, split="train", label="fine"):
    """Reads CIFAR-10 or CIFAR-100 in the official binary or Python-pickle
    layout, from the .tar.gz archive or the extracted folder (or the folder
    holding it).

    Returns images uint8 (N, 3, 32, 32) and labels int64 (N,); label is
    'fine' or 'coarse' (CIFAR-100 only). Binary records are parsed in C. A
    truncated or malformed file raises lade.DecodeError naming it."""
    fn = "lade.data.load_cifar"
    if split not in ("train", "test"):
        raise ValueError(f"{fn}: argument 'split' must be 'train' or 'test', got {split!r}")
    if label not in ("fine", "coarse"):
        raise ValueError(f"{fn}: argument 'label' must be 'fine' or 'coarse', got {label!r}")
    kind, pickled, files = _cifar_files(path, split)
    if kind == 10 and label == "coarse":
        raise ValueError(f"{fn}: argument 'label' is 'coarse', but '{path}' holds CIFAR-10 (no coarse labels)")
    if pickled:
        parts = [_unpickle_batch(name, read(), kind, label) for name, _, read in files]
        if len(parts) == 1:
            return parts[0]
        # several batches (CIFAR-10 train): one copy into the joined arrays
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    # binary batches: read one at a time, each parsed in C into its rows of the joined arrays
    counts = [_C.cifar_count(nbytes, kind, name) for name, nbytes, _ in files]
    images, labels = np.empty((sum(counts), 3, 32, 32), np.uint8), np.empty(sum(counts), np.int64)
    start = 0
    for (name, _, read), count in zip(files, counts):
        rows = slice(start, start + count)
        _C.cifar_parse(np.frombuffer(read(), np.uint8), kind, label == "coarse", name, images[rows], labels[rows])
        start += count
    return images, labels


# ------------------------------------------------------------------------ transforms

class Transform(_C.Transform):
    """Per-sample augmentation to normalised float32 (3, out_h, out_w), done in
    C; its fields (out_h, pad, scale_min, ..., mean, std) are read-only. Use the
    presets below; `params(height, width, seed, stream)` shows what a seed draws."""

    def __call__(self, images, out=None, seed=0, stream=0):
        """Augments uint8 images (N, 3, H, W); image i uses stream + i."""
        return augment(images, self, out=out, seed=seed, stream=stream)

    def __repr__(self):
        return f"{type(self).__name__}(output_shape={self.output_shape})"


class CifarTrain(Transform):
    """Spec 3.2: zero-pad by 4, random 32x32 crop, horizontal flip (p = 0.5),
    scale to [0, 1], normalise with the CIFAR-10 mean/std."""

    def __init__(self, pad=4, flip=True, mean=None, std=None):
        super().__init__("cifar_train", pad=pad, flip=flip, mean=mean, std=std)


class CifarTest(Transform):
    """Spec 3.2: scale to [0, 1] and normalise only."""

    def __init__(self, mean=None, std=None):
        super().__init__("cifar_test", mean=mean, std=std)


class ImageNetTrain(Transform):
    """Spec 3.4: RandomResizedCrop(size, scale, ratio) with Pillow-style
    antialiased bilinear resizing, horizontal flip, ColorJitter(brightness,
    contrast, saturation) in random order as torchvision does, normalise
    (ImageNet mean/std by default; jitter 0 switches it off, as for iNat)."""

    def __init__(self, size=224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), brightness=0.4, contrast=0.4,
                 saturation=0.4, flip=True, mean=None, std=None):
        super().__init__("imagenet_train", size=size, scale=scale, ratio=ratio, brightness=brightness,
                         contrast=contrast, saturation=saturation, flip=flip, mean=mean, std=std)


class ImageNetEval(Transform):
    """Spec 3.4: resize the shorter side to `resize` (bilinear, antialiased),
    centre crop `crop`, normalise."""

    def __init__(self, resize=256, crop=224, mean=None, std=None):
        super().__init__("imagenet_eval", size=crop, resize=resize, mean=mean, std=std)


def augment(images, transform, out=None, seed=0, stream=0):
    """Augments uint8 images (N, 3, H, W) into float32 `out` (N, 3, h, w)
    (allocated when None); image i draws from rng stream (seed, stream + i).
    Runs on lade's thread pool."""
    return _C.augment(images, transform, out, seed, stream)


def augment_image(image, transform, out=None, seed=0, stream=0):
    """Augments one decoded uint8 image (H, W, 3) into float32 `out`
    (3, h, w) with rng stream (seed, stream)."""
    return _C.augment_image(image, transform, out, seed, stream)


def decode_jpeg(data):
    """Decodes JPEG bytes to uint8 RGB (H, W, 3) with libjpeg-turbo
    (grayscale and CMYK become RGB). Corrupt data, or an image of more pixels than
    jpeg_max_pixels(), raises lade.DecodeError."""
    return _C.decode_jpeg(data)


def read_jpeg(path):
    """Reads and decodes a JPEG file to uint8 RGB (H, W, 3)."""
    return _C.read_jpeg(_path(path, "lade.data.read_jpeg"))


def set_jpeg_max_pixels(max_pixels):
    """Sets the largest image (width x height) any JPEG decode accepts, process-wide, in
    [1, 2^28]. The default, 2^26 (67 Mpx, a 200 MB RGB buffer), is far above the datasets'
    images and keeps a hostile file from asking for gigabytes. Returns the previous limit."""
    previous = _C.jpeg_max_pixels()
    _C.jpeg_max_pixels(max_pixels)
    return previous


def jpeg_max_pixels():
    """The pixel limit of JPEG decoding in force (see set_jpeg_max_pixels)."""
    return _C.jpeg_max_pixels()


# ----------------------------------------------------------------- file datasets

class _FileDataset:
    """(path, label) entries under a root folder, held in C (self._files)."""

    def __len__(self):
        return len(self._files)

    def __getitem__(self, i):
        """(path relative to root, label)"""
        path, label, _ = self._files.entry(i)
        return path, label

    def line(self, i):
        """The list-file line of entry i (0 for entries not read from a list file)."""
        return self._files.entry(i)[2]

    @property
    def labels(self):
        """int64 (N,), a fresh array"""
        return self._files.labels

    def _finish(self, files, num_classes):
        self._files = files
        self.num_classes = int(num_classes) if num_classes is not None else int(files.labels.max(initial=-1)) + 1


class ListFile(_FileDataset):
    """A list file of "relative/path label" lines (ImageNet-LT, Places-LT,
    iNaturalist-2018), paths relative to `root` (default: the list file's
    folder). Labels must lie in [0, num_classes) (default: any label >= 0,
    num_classes = max + 1). Lines may end in LF, CRLF or CR, and a UTF-8
    byte-order mark is skipped; paths must be UTF-8. Bad lines raise
    lade.DecodeError or ValueError naming the file and the line. With `text`
    (bytes) the list is read from it and `path` only names it in messages."""

    def __init__(self, path, root=None, num_classes=None, text=None):
        fn = "lade.data.ListFile"
        path = _path(path, fn)
        if num_classes is not None:
            num_classes = _args.whole(num_classes, fn, "num_classes", 1, 2 ** 62)
        if text is None:
            with open(path, "rb") as f:
                text = f.read()
        elif not isinstance(text, bytes):
            raise TypeError(f"{fn}: argument 'text' must be bytes, got {type(text).__name__}")
        self.path = path
        self.root = _path(root, fn, "root") if root is not None else os.path.dirname(os.path.abspath(path))
        self._finish(_C.FileList(self.root, text, path, num_classes or 0), num_classes)


class ImageFolder(_FileDataset):
    """A class-folder tree root/<class>/<image>: classes are the sub-folders in
    sorted order (label = position), images the files with one of
    `extensions` (case-insensitive; one string is one extension), sorted."""

    def __init__(self, root, extensions=(".jpg", ".jpeg")):
        fn = "lade.data.ImageFolder"
        self.root = _path(root, fn, "root")
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{fn}: '{self.root}' is not a folder")
        # a str is itself iterable: '.jpg' would otherwise mean the extensions '.', 'j', 'p' and 'g'
        exts = (extensions,) if isinstance(extensions, str) else extensions
        try:
            exts = tuple(exts)
        except TypeError:
            exts = None
        if not exts or not all(isinstance(e, str) and e for e in exts):
            raise TypeError(f"{fn}: argument 'extensions' must be a non-empty string or a non-empty sequence of "
                            f"them, got {extensions!r}")
        exts = tuple(e.lower() for e in exts)
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        if not self.classes:
            raise ValueError(f"{fn}: '{self.root}' has no class sub-folders")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            files = sorted(e.name for e in os.scandir(os.path.join(self.root, name))
                           if e.is_file() and e.name.lower().endswith(exts))
            paths += [f"{name}/{f}" for f in files]
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"{fn}: no files ending in {', '.join(exts)} under '{self.root}'")
        self._finish(_C.FileList(self.root, paths=paths, labels=np.array(labels, np.int64)), len(self.classes))


# ----------------------------------------------------------------------- loader

class Loader:
    """Batches of augmented samples, prepared ahead by C worker threads.

    source: (images uint8 (N, 3, H, W), labels int64 (N,)) in memory, or a
    ListFile / ImageFolder of JPEGs. Iterating yields (images float32
    (B, 3, h, w), labels int64 (B,)) for one epoch, then `epoch` advances.
    sampler: any object with __len__ and epoch_indices(epoch) -> int64 array;
    None gives a seeded shuffle of all samples each epoch, the same order as
    lade.sampling.InstanceSampler(N, seed) (or the natural order with
    shuffle=False). Batches depend only on (seed, epoch, order),
    never on num_workers or thread timing.

    A sample that cannot be read raises (lade.DecodeError, OSError or
    ValueError, naming the file and the list line) when its batch comes up;
    with skip_bad=True it is left out of its batch (which is then shorter) and
    counted in `skipped`. Iteration may be resumed at any epoch with
    start_epoch or set_epoch; a new iteration begun in the middle of an epoch
    restarts that epoch. When an epoch ends the next one starts loading. Use as a context manager or call close(); the
    threads also stop on garbage collection.
    """

    def __init__(self, source, batch_size, transform, sampler=None, seed=0, num_workers=2, prefetch=None,
                 drop_last=True, skip_bad=False, shuffle=True, start_epoch=0):
        fn = "lade.data.Loader"
        if isinstance(source, _FileDataset):
            arrays = dict(files=source._files)
        elif isinstance(source, tuple) and len(source) == 2:
            arrays = dict(images=source[0], labels=source[1])
        else:
            raise TypeError(f"{fn}: argument 'source' must be (images, labels), a ListFile or an ImageFolder, "
                            f"got {type(source).__name__}")
        if sampler is not None and not (hasattr(sampler, "epoch_indices") and hasattr(sampler, "__len__")):
            raise TypeError(f"{fn}: argument 'sampler' must have __len__ and epoch_indices(epoch), "
                            f"got {type(sampler).__name__}")
        self.epoch = _args.whole(start_epoch, fn, "start_epoch", 0, 2 ** 62)
        self.transform = transform
        self.sampler = sampler
        self.seed = seed
        self.num_workers = num_workers
        self.prefetch = prefetch if prefetch is not None else 2 * num_workers
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        # the C loader holds the source arrays (or file list) and checks them and the numbers
        self._loader = _C.Loader(transform, batch_size, drop_last=self.drop_last, skip_bad=bool(skip_bad),
                                 num_workers=num_workers, prefetch=self.prefetch, seed=seed, **arrays)
        self.batch_size = batch_size
        self._num_samples = self._loader.sample_count
        self._begun = None  # the epoch running in C
        self._position = 0  # batches handed out of it

    def __len__(self):
        n = len(self.sampler) if self.sampler is not None else self._num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        """The epoch the next iteration runs (for resuming)."""
        self.epoch = _args.whole(epoch, "lade.data.Loader.set_epoch", "epoch", 0, 2 ** 62)

    @property
    def skipped(self):
        """Samples skipped so far (skip_bad=True)."""
        return self._loader.skipped[0]

    @property
    def last_skip_reason(self):
        return self._loader.skipped[1]

    def _begin(self):
        indices = None
        if self.sampler is not None:
            indices = self.sampler.epoch_indices(self.epoch)
            if len(indices) != len(self.sampler):
                raise ValueError(f"lade.data.Loader: sampler.epoch_indices({self.epoch}) returned "
                                 f"{len(indices)} indices, but len(sampler) is {len(self.sampler)}")
        elif not self.shuffle:
            indices = np.arange(self._num_samples, dtype=np.int64)
        self._begun = None
        self._loader.begin(self.epoch, indices)
        self._begun = self.epoch
        self._position = 0

    def __iter__(self):
        if self._begun != self.epoch or self._position:
            self._begin()
        return self

    def __next__(self):
        if self._begun != self.epoch:
            self._begin()
        batch = None
        while batch is None or len(batch[1]) == 0:  # with skip_bad a batch whose every sample was bad is left out
            self._position += 1
            batch = self._loader.next()
            if batch is None:  # the end of the epoch
                self.epoch += 1
                try:  # start preparing the next epoch now; a failure resurfaces on the next iteration
                    self._begin()
                except Exception:
                    self._begun = None
                raise StopIteration
        return batch

    def close(self):
        """Stops and joins the worker threads; idempotent. `skipped` stays readable."""
        self._loader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
