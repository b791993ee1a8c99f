"""The data of an experiment: where the data root is, the CIFAR readers (binary and Python
archives or folders, and CIFAR-10 as JPEGs with list files) and the CIFAR-LT splits: the
long-tailed training subset, the held-out labelled set for calibration and prior estimation,
and the (optionally truncated) uniform test set."""
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from lade import data as data_mod
from lade import priors, sampling
from lade.app import config as config_mod

__all__ = ["Dataset", "FileSplit", "load_dataset", "resolve_data_root", "find_source", "read_cifar10_jpeg"]

_SOURCES = {  # dataset -> file or folder names tried in the data root, in order
    "cifar100": ["cifar-100-binary", "cifar-100-binary.tar.gz", "cifar-100-python", "cifar-100-python.tar.gz"],
    "cifar10": ["cifar-10-batches-bin", "cifar-10-binary.tar.gz", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                "cifar10-jpeg", "cifar10-jpeg.tar.gz"],
}
_CLASSES = {"cifar100": 100, "cifar10": 10}


def resolve_data_root(cfg, override=None):
    """The data folder: `override`, else data.root, else <repo>/../shared/data. Must exist."""
    root = override or cfg["data"]["root"]
    key = "--data-root" if override else "data.root" if cfg["data"]["root"] else "default data root"
    root = Path(root) if root else config_mod.default_data_root()
    if not root.is_dir():
        raise FileNotFoundError(f"lade: the data root '{root}' ({key}) does not exist or is not a folder")
    return root


def find_source(root, dataset):
    for name in _SOURCES[dataset]:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"lade: no {dataset} data in '{root}' (looked for {', '.join(_SOURCES[dataset])})")


def read_cifar10_jpeg(source):
    """CIFAR-10 as JPEGs with train.txt / test.txt list files, in a folder or a .tar.gz archive (checked
    whole, then unpacked into a temporary folder). The list files are read by lade.data.ListFile and the
    images decoded by the C loader's worker threads. Returns {'train': (images, labels), 'test': ...}."""
    if source.is_dir():
        return {split: _decode_listed(source, split, str(source)) for split in ("train", "test")}
    with tempfile.TemporaryDirectory(prefix="lade-cifar10-jpeg-") as tmp:
        with data_mod.open_tar(source, "lade: CIFAR-10 JPEG archive") as tar:  # checks CRC and tar headers
            tar.extractall(tmp, filter="data")
        entries = os.listdir(tmp)
        top = Path(tmp) / entries[0] if len(entries) == 1 and (Path(tmp) / entries[0]).is_dir() else Path(tmp)
        # messages name the archive and its member, not the temporary folder
        return {split: _decode_listed(top, split, f"{source}:{top.relative_to(tmp)}".rstrip(".").rstrip("/"))
                for split in ("train", "test")}


def _decode_listed(folder, split, shown_as):
    """Decodes the 32x32 images `folder`/`split`.txt lists into uint8 (n, 3, 32, 32), with their labels.
    Errors name `shown_as`/`split`.txt, its line and the image."""
    listing = folder / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"lade: '{shown_as}' has no {split}.txt list file")
    try:
        files = data_mod.ListFile(listing, root=folder, num_classes=10)
        images = np.empty((len(files), 3, 32, 32), np.uint8)
        # mean 0, std 1: the loader hands out the pixels / 255 as float32, which round back exactly
        unscaled = data_mod.CifarTest(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        with data_mod.Loader(files, 512, unscaled, shuffle=False, drop_last=False) as batches:
            done = 0
            for x, y in batches:
                np.rint(x * 255, out=x)
                images[done:done + len(y)] = x
                done += len(y)
    except (data_mod.DecodeError, OSError, ValueError) as e:
        raise type(e)(str(e).replace(str(folder), shown_as)) from None
    return images, files.labels


_LOADED = {}  # (source path, mtime) -> splits; one process often trains several runs on the same data


def _load_splits(source, dataset):
    key = (str(source), source.stat().st_mtime)
    if key not in _LOADED:
        if "jpeg" in source.name:
            splits = read_cifar10_jpeg(source)
        else:
            splits = {s: data_mod.load_cifar(source, s) for s in ("train", "test")}
        _LOADED.clear()
        _LOADED[key] = splits
    return _LOADED[key]


class Dataset:
    """A CIFAR-LT experiment's data: the long-tailed training subset, a held-out labelled set drawn
    with the same profile from the training images the subset left out (the 'source' data for
    calibration and prior estimation), and the (optionally truncated) uniform test set.

    The held-out set takes int(calib_fraction * n_c) (at least 1) images of class c from the
    training images the subset did not use, as many as exist: the CIFAR-LT head class uses all
    of its 500 images, so it is missing from the held-out set (BBSE and bias-corrected
    calibration then cannot run; see lade.app.evaluation). With calib_test_per_class = k it is instead
    the last k test images of every class, disjoint from the first test_per_class that are
    evaluated: balanced and complete, which is what EM and BBSE need."""

    def __init__(self, train, calib, test, counts, classes, root):
        self.train, self.calib, self.test = train, calib, test
        self.counts, self.classes, self.root = counts, classes, root  # root: the data root it came from

    def digest(self):
        """{'train', 'calib', 'test'}: sha256 of each split's labels and images (None for no held-out set):
        the pixels of images in memory; for image files, the list lines (path and label) the split
        takes, not the files' bytes. A run records it (run.json) and `lade features` checks it."""
        return {name: None if split is None else _digest(*split)
                for name, split in (("train", self.train), ("calib", self.calib), ("test", self.test))}


def _digest(images, labels):
    h = hashlib.sha256(np.ascontiguousarray(labels, np.int64))
    if isinstance(images, FileSplit):
        for i in images.indices.tolist():
            h.update(images.files[i][0].encode() + b"\0")
    else:
        h.update(np.ascontiguousarray(images))
    return h.hexdigest()


class FileSplit:
    """Some entries (indices) of a ListFile / ImageFolder: decoded by the C loader batch by batch,
    so a bad image names its list file and line when its batch comes up."""

    def __init__(self, files, indices):
        self.files, self.indices = files, np.ascontiguousarray(indices, dtype=np.int64)
        self.shape = (len(self.indices),)  # like an image array's first dimension

    @property
    def labels(self):
        return np.ascontiguousarray(self.files.labels[self.indices])


def _file_path(root, d, key):
    p = Path(d[key])
    p = p if p.is_absolute() else root / p
    if not p.exists():
        raise FileNotFoundError(f"lade config: key 'data.{key}': '{p}' does not exist")
    return p


def _load_files(cfg, root):
    """A listfile / imagefolder dataset: counts and priors from the training list; a class without
    training images is refused by name; test images of classes the training list lacks are left
    out and reported."""
    d = cfg["data"]
    for key in ("train", "test"):
        if d[key] is None:
            raise config_mod.ConfigError(f"lade config: key 'data.{key}' is required for dataset '{d['dataset']}'")
    image_root = str(_file_path(root, d, "image_root")) if d["image_root"] else None

    def read(key):
        path = _file_path(root, d, key)
        if d["dataset"] == "listfile":
            return data_mod.ListFile(path, root=image_root)
        return data_mod.ImageFolder(path)
    train, test = read("train"), read("test")
    val = read("val") if d["val"] else None
    train_labels = train.labels
    if not train_labels.size:
        raise config_mod.ConfigError(f"lade config: key 'data.train': '{_file_path(root, d, 'train')}' lists no images")
    classes = train.num_classes  # an image folder's classes include an empty last folder
    names = getattr(train, "classes", None)
    present = np.unique(train_labels)  # not a bincount: a label of 10^11 would allocate 10^11 counts
    if present.size < classes:
        gaps = np.flatnonzero(present != np.arange(present.size))
        c = int(gaps[0]) if gaps.size else present.size
        largest = "" if names else (f"; the largest label, {classes - 1}, is on line "
                                    f"{train.line(int(np.argmax(train_labels)))}")
        raise config_mod.ConfigError(f"lade: class {c}{f' ({names[c]})' if names else ''} has no image in the "
                                     f"training data '{_file_path(root, d, 'train')}' (labels must be "
                                     f"0..{classes - 1}, each with an image{largest})")
    available = priors.class_counts(train_labels, classes)

    def known(split, name):
        labels = split.labels
        keep = np.flatnonzero(labels < classes)
        if d["dataset"] == "imagefolder" and split.classes[:classes] != names:
            k = next(k for k in range(classes) if k >= len(split.classes) or split.classes[k] != names[k])
            theirs = f"'{split.classes[k]}'" if k < len(split.classes) else "missing"
            raise config_mod.ConfigError(f"lade: the class folders of data.{name} differ from those of data.train: "
                                         f"class {k} is '{names[k]}' in data.train and {theirs} in data.{name}")
        if not keep.size:
            raise config_mod.ConfigError(f"lade config: key 'data.{name}': '{_file_path(root, d, name)}' has no image "
                                         f"of the {classes} training classes")
        if keep.size < labels.size:
            extra = sorted(set(labels[labels >= classes].tolist()))
            label = [split.classes[c] for c in extra] if names else extra
            print(f"lade: data.{name} has {labels.size - keep.size} images of classes not in the training data "
                  f"({', '.join(map(str, label[:10]))}); they are left out", file=sys.stderr)
        return keep
    test_idx = known(test, "test")
    if d["lt_subset"]:
        img_max = d["train_img_max"] if d["train_img_max"] is not None else int(available.min())
        counts = priors.lt_profile(classes, img_max, 1.0 / d["imbalance"], d["profile"])
        if (counts > available).any() or counts.min() < 1:
            c = int(np.argmax((counts > available) | (counts < 1)))
            raise config_mod.ConfigError(f"lade config: keys 'data.train_img_max' / 'data.imbalance' ask {int(counts[c])} "
                                         f"images of class {c}, the training data has {int(available[c])}")
        train_idx = sampling.lt_subset(train_labels, counts, seed=d["subset_seed"]).indices
    else:
        counts, train_idx = available, np.arange(len(train), dtype=np.int64)
    if d["test_per_class"] is not None:
        labels = test.labels[test_idx]
        test_idx = test_idx[np.concatenate([np.flatnonzero(labels == c)[:d["test_per_class"]] for c in range(classes)])]
        test_idx.sort()
    calib = None if val is None else FileSplit(val, known(val, "val"))
    train_split, test_split = FileSplit(train, train_idx), FileSplit(test, test_idx)
    return Dataset((train_split, train_split.labels), None if calib is None else (calib, calib.labels),
                   (test_split, test_split.labels), counts, classes, root)


def load_dataset(cfg, data_root=None):
    d = cfg["data"]
    root = resolve_data_root(cfg, data_root)
    if d["dataset"] in ("listfile", "imagefolder"):
        return _load_files(cfg, root)
    source = find_source(root, d["dataset"])
    splits = _load_splits(source, d["dataset"])
    classes = _CLASSES[d["dataset"]]
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    img_max = d["train_img_max"] if d["train_img_max"] is not None else train_x.shape[0] / classes
    counts = priors.lt_profile(classes, img_max, 1.0 / d["imbalance"], d["profile"])
    if counts.min() < 1:
        raise config_mod.ConfigError(f"lade config: keys 'data.train_img_max' / 'data.imbalance' leave class "
                                     f"{int(np.argmin(counts))} without training images")
    available = priors.class_counts(train_y, classes)
    if (counts > available).any():
        c = int(np.argmax(counts > available))
        raise config_mod.ConfigError(f"lade config: key 'data.train_img_max' asks {int(counts[c])} images of class "
                                     f"{c}, but '{source}' has {int(available[c])}")
    subset = sampling.lt_subset(train_y, counts, seed=d["subset_seed"])
    train = (np.ascontiguousarray(train_x[subset.indices]), np.ascontiguousarray(subset.labels))

    calib = None
    if d["calib_test_per_class"] is not None:
        k, first = d["calib_test_per_class"], d["test_per_class"] or 0
        per_class = priors.class_counts(test_y, classes)
        if d["test_per_class"] is None or (first + k > per_class).any():
            raise config_mod.ConfigError(
                f"lade config: key 'data.calib_test_per_class' ({k}) needs 'data.test_per_class' set and their sum "
                f"at most the {int(per_class.min())} test images of the smallest class")
        idx = np.concatenate([np.flatnonzero(test_y == c)[-k:] for c in range(classes)])
        calib = (np.ascontiguousarray(test_x[idx]), np.ascontiguousarray(test_y[idx]))
    elif d["calib_fraction"] > 0:
        unused = np.ones(train_y.shape[0], bool)
        unused[subset.indices] = False
        rest = np.flatnonzero(unused)
        calib_counts = np.maximum(1, (counts * d["calib_fraction"]).astype(np.int64))
        calib_counts = np.minimum(calib_counts, priors.class_counts(train_y[rest], classes))
        pick = sampling.lt_subset(np.ascontiguousarray(train_y[rest]), calib_counts, seed=d["subset_seed"] + 1)
        idx = rest[pick.indices]
        calib = (np.ascontiguousarray(train_x[idx]), np.ascontiguousarray(train_y[idx]))

    if d["test_per_class"] is not None:
        uniform = np.full(classes, 1.0 / classes, np.float32)
        idx = sampling.shifted_test_indices(test_y, uniform, 1, "uniform", img_max=d["test_per_class"])
        test = (np.ascontiguousarray(test_x[idx]), np.ascontiguousarray(test_y[idx]))
    else:
        test = (test_x, test_y)
    return Dataset(train, calib, test, counts, classes, root)
