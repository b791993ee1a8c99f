"""Training runs: data preparation, a restartable training loop and the run folder.

A run folder holds::

    config.yaml          the complete, validated config (what the run depends on)
    run.json             overrides applied, data root, thread count, start/finish times
    metrics.jsonl        one line per finished epoch (loss, accuracy, lr, images/s, seconds)
    checkpoint.npz       written atomically after every epoch: weights, BN statistics, SGD velocity
                         and step count, the number of finished epochs (the loader's order is a pure
                         function of (run.seed, epoch), so that number is the whole sampler/RNG state)
    train_counts.npy     per-class training counts (the source prior)
    test_logits.npy      raw logits f on the test set, test_labels.npy
    calib_logits.npy     raw logits on a held-out labelled source set (for EM / BBSE), calib_labels.npy
    final.json           written last: the run finished

``train(cfg, run_dir, resume=True)`` after a kill (even kill -9) continues from the last
checkpoint and ends with the same weights as an uninterrupted run with the same seed and
thread count.
"""
import fcntl
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from lade.app import config as config_mod
from lade import data as data_mod
from lade import losses, metrics, nn, priors, sampling
from lade._C import set_num_threads

__all__ = ["RunError", "Dataset", "load_dataset", "train", "resolve_data_root", "build_loss", "epoch_lr",
           "run_status", "check_run_dir", "Progress", "load_arrays", "read_metrics", "RUN_MARKER", "RUN_FILES"]

CHECKPOINT = "checkpoint.npz"
_CHECKPOINT_VERSION = 1


class RunError(RuntimeError):
    """A run folder cannot be used as asked (another config in it, nothing to resume, ...)."""


# ------------------------------------------------------------------------------------ data

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


def _find_source(root, dataset):
    for name in _SOURCES[dataset]:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"lade: no {dataset} data in '{root}' (looked for {', '.join(_SOURCES[dataset])})")


def _read_cifar10_jpeg(source):
    """CIFAR-10 as JPEGs with train.txt / test.txt list files (folder or .tar.gz), decoded in C.
    Returns {'train': (images, labels), 'test': (images, labels)}."""
    splits = {}
    if source.is_dir():
        for split in ("train", "test"):
            listing = data_mod.ListFile(source / f"{split}.txt", root=source, num_classes=10)
            images = np.empty((len(listing), 3, 32, 32), np.uint8)
            for i in range(len(listing)):
                image = data_mod.read_jpeg(source / listing[i][0])
                if image.shape != (32, 32, 3):
                    raise data_mod.DecodeError(f"lade: '{source / listing[i][0]}' ({split}.txt line "
                                               f"{listing.line(i)}): expected a 32x32 RGB image, got "
                                               f"{image.shape[1]}x{image.shape[0]}")
                images[i] = image.transpose(2, 0, 1)
            splits[split] = (images, listing.labels)
        return splits
    with data_mod.open_tar(source, "lade: CIFAR-10 JPEG archive") as tar:  # checks CRC and tar headers
        blobs, lists, names = {}, {}, {}
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.split("/", 1)
            rel = parts[1] if len(parts) == 2 else parts[0]
            if rel in ("train.txt", "test.txt"):
                lists[rel[:-4]] = tar.extractfile(member).read()
                names[rel[:-4]] = member.name
            elif rel.lower().endswith(".jpg"):
                blobs[rel] = (member.name, tar.extractfile(member).read())
    for split in ("train", "test"):
        if split not in lists:
            raise FileNotFoundError(f"lade: '{source}' has no {split}.txt list file")
        where = f"{source}:{names[split]}"
        listing = data_mod.ListFile(where, root="", num_classes=10, text=lists[split])
        images = np.empty((len(listing), 3, 32, 32), np.uint8)
        for i in range(len(listing)):
            path = listing[i][0]
            line = listing.line(i)
            if path not in blobs:
                raise FileNotFoundError(f"lade: '{where}' line {line} names '{path}', which is not in the archive")
            member, blob = blobs[path]
            try:
                image = data_mod.decode_jpeg(blob)
            except data_mod.DecodeError as e:
                raise data_mod.DecodeError(f"lade: '{source}' member '{member}' ({names[split]} line {line}): "
                                           f"{e}") from None
            if image.shape != (32, 32, 3):
                raise data_mod.DecodeError(f"lade: '{source}' member '{member}' ({names[split]} line {line}): "
                                           f"expected a 32x32 RGB image, got {image.shape[1]}x{image.shape[0]}")
            images[i] = image.transpose(2, 0, 1)
        splits[split] = (images, listing.labels)
    return splits


_LOADED = {}  # (source path, mtime) -> splits; one process often trains several runs on the same data


def _load_splits(source, dataset):
    key = (str(source), source.stat().st_mtime)
    if key not in _LOADED:
        if "jpeg" in source.name:
            splits = _read_cifar10_jpeg(source)
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
    calibration then cannot run; see lade.report). With calib_test_per_class = k it is instead
    the last k test images of every class, disjoint from the first test_per_class that are
    evaluated: balanced and complete, which is what EM and BBSE need."""

    def __init__(self, train, calib, test, counts, classes, source):
        self.train, self.calib, self.test = train, calib, test
        self.counts, self.classes, self.source = counts, classes, source


def load_dataset(cfg, data_root=None):
    d = cfg["data"]
    root = resolve_data_root(cfg, data_root)
    source = _find_source(root, d["dataset"])
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
    return Dataset(train, calib, test, counts, classes, source)


# ------------------------------------------------------------------------------- training

def build_loss(cfg, counts):
    """The configured loss with the training prior / counts it needs."""
    name = cfg["loss"]["name"]
    opts = {k: v for k, v in cfg["loss"].items() if k != "name"}
    prior = priors.prior_from_counts(counts)
    if name in ("class_balanced", "ldam_drw"):
        loss = losses.make(name, counts=counts, **opts)
        loss.prior = prior  # the training prior, for the test-time adjustment
        return loss
    return losses.make(name, prior=prior, **opts)


def epoch_lr(cfg, epoch):
    """Learning rate of 1-based `epoch` (spec §5.1: set at the start of each epoch)."""
    o = cfg["optim"]
    if o["schedule"] == "warmup_multistep":
        return nn.warmup_multistep_lr(o["lr"], epoch, warmup_epochs=o["warmup_epochs"],
                                      warmup_start=o["warmup_start"], milestones=tuple(o["milestones"]),
                                      factor=o["lr_factor"])
    if o["schedule"] == "cosine":
        return nn.cosine_lr(o["lr"], epoch, o["epochs"])
    return o["lr"]


class Progress:
    """One progress line on stderr: epoch, batch, loss, accuracy, images/s and ETA. On a
    terminal it is redrawn in place; otherwise a line is printed every tenth of an epoch."""

    def __init__(self, epochs, batches, stream=None, enabled=True):
        self.epochs, self.batches = epochs, batches
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, batches // 10)

    def update(self, epoch, batch, loss, acc, rate, remaining_images):
        if not self.enabled:
            return
        last = batch == self.batches
        if not self.tty and not last and batch % self.every:
            return
        width = 20
        filled = int(width * batch / self.batches)
        eta = remaining_images / rate if rate > 0 else float("nan")
        line = (f"epoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] {batch}/{self.batches} "
                f"loss {loss:.4f} acc {100 * acc:5.1f}% {rate:6.1f} img/s ETA {_fmt_seconds(eta)}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if last else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _fmt_seconds(s):
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _log(msg):
    sys.stderr.write(f"lade: {msg}\n")
    sys.stderr.flush()


def _save_atomic(path, write):
    """write(file) into path.tmp, fsync, then rename over path: a reader never sees half a file.
    A failed write (a full disk, ...) leaves the previous file as it was and raises RunError naming path."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise RunError(f"lade: cannot write '{path}': {e.strerror or e}; the previous version is unchanged") from e


def _save_checkpoint(run_dir, net, opt, epoch, cfg_text):
    def write(f):
        np.savez(f, version=np.int64(_CHECKPOINT_VERSION), epoch=np.int64(epoch), params=net.params,
                 buffers=net.buffers, velocity=opt.velocity, steps=np.int64(opt.steps), lr=np.float64(opt.lr),
                 config=np.array(cfg_text))
    _save_atomic(run_dir / CHECKPOINT, write)


def _load_checkpoint(run_dir, net, opt, cfg):
    """Restores net and opt from the checkpoint (all or nothing) and returns its epoch. Raises RunError
    naming the file when it is unreadable, damaged or written for a config that differs in a key that
    is not safe to change on resume."""
    path = run_dir / CHECKPOINT
    try:
        with np.load(path, allow_pickle=False) as ck:
            arrays = {name: ck[name] for name in ("version", "epoch", "params", "buffers", "velocity", "steps", "lr",
                                                  "config")}
    except Exception as e:  # zipfile, zlib, KeyError, ValueError: all mean the same to the user
        raise RunError(f"lade: '{path}' is not a readable lade checkpoint ({type(e).__name__}: {e}); "
                       f"pass --overwrite to start the run over") from e
    if int(arrays["version"]) != _CHECKPOINT_VERSION:
        raise RunError(f"lade: '{path}' has checkpoint version {int(arrays['version'])}, expected "
                       f"{_CHECKPOINT_VERSION}")
    try:
        saved = config_mod.validate(config_mod.parse_yaml(str(arrays["config"])))
    except Exception as e:
        raise RunError(f"lade: '{path}' holds an unreadable config ({e})") from e
    diff = config_mod.differences(saved, cfg, ignore=config_mod.RESUME_SAFE_SECTIONS)
    if diff:
        raise RunError(f"lade: '{path}' was written for another config than '{run_dir / 'config.yaml'}' "
                       f"(keys differ: {', '.join(diff)})")
    for name, target in (("params", net.params), ("buffers", net.buffers), ("velocity", opt.velocity)):
        if arrays[name].shape != target.shape or arrays[name].dtype != target.dtype:
            raise RunError(f"lade: '{path}': '{name}' is {arrays[name].dtype} {arrays[name].shape}, expected "
                           f"{target.dtype} {target.shape}")
        if not np.isfinite(arrays[name]).all():
            raise RunError(f"lade: '{path}': '{name}' contains NaN or Inf")
    epoch, steps, lr = int(arrays["epoch"]), int(arrays["steps"]), float(arrays["lr"])
    if not (0 <= epoch <= cfg["optim"]["epochs"] and steps >= 0 and math.isfinite(lr) and lr >= 0):
        raise RunError(f"lade: '{path}': epoch {epoch}, steps {steps} or lr {lr} is out of range")
    net.params[...] = arrays["params"]
    net.buffers[...] = arrays["buffers"]
    opt.velocity[...] = arrays["velocity"]
    opt.steps, opt.lr = steps, lr
    return epoch


def _save_npy(path, array):
    _save_atomic(path, lambda f: np.save(f, array))


def read_metrics(path, drop_torn_last=False):
    """Rows of metrics.jsonl. A line that is not a JSON object raises RunError naming the file and line;
    with drop_torn_last a last line without its newline that does not parse (the process was killed
    while writing it) is dropped and reported by a log line instead."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"lade: cannot read '{path}': {e}") from e
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise ValueError("expected an object with an integer 'epoch'")
        except ValueError as e:
            if drop_torn_last and i == len(lines):  # the last line has no newline: torn by a kill
                _log(f"'{path}' line {i} is incomplete ({line[:40]!r}...), written when the run was killed; "
                     f"dropped it")
                break
            raise RunError(f"lade: '{path}' line {i}: expected one JSON object per line with an integer "
                           f"'epoch', got {line[:60]!r} ({e})") from e
        rows.append(row)
    return rows


RUN_MARKER = ".lade-run"  # written first into every run folder lade creates
# every file lade writes into a run folder: all --overwrite ever deletes
RUN_FILES = (RUN_MARKER, "config.yaml", "run.json", "metrics.jsonl", CHECKPOINT, "train_counts.npy",
             "test_logits.npy", "test_labels.npy", "calib_logits.npy", "calib_labels.npy", "final.json",
             "report.md", "results.json", "per_class_accuracy.png", "shifted_tests.png", "reliability.png")


def run_status(run_dir):
    """'empty', 'running' (started, not finished) or 'finished'."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").is_file():
        return "finished"
    if (run_dir / "config.yaml").is_file():
        return "running"
    return "empty"


def check_run_dir(run_dir, cfg, resume=False, overwrite=False):
    """Decides, without touching anything, how `run_dir` would be used: returns (config to train
    with, resuming). Refuses a folder holding another run (RunError naming the differing keys)
    unless overwrite, and overwrite refuses a folder without lade's marker file; on resume the saved
    config is used, plus the resume-safe keys of `cfg`."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunError("lade: --resume and --overwrite exclude each other")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"lade: run folder '{run_dir}' exists and is not a folder")
    saved_path = run_dir / "config.yaml"
    has_files = run_dir.is_dir() and any(run_dir.iterdir())
    if overwrite and has_files and not (run_dir / RUN_MARKER).is_file():
        raise RunError(f"lade: '{run_dir}' has no {RUN_MARKER} marker, so it is not provably a lade run folder; "
                       f"--overwrite refuses to delete anything in it (delete it yourself or use another folder)")
    if has_files and not saved_path.is_file() and not (run_dir / RUN_MARKER).is_file():
        raise RunError(f"lade: '{run_dir}' is not empty and holds no lade run (no config.yaml); refusing to use it")
    if not saved_path.is_file() or overwrite:
        return cfg, False
    try:
        saved = config_mod.load(saved_path)
    except config_mod.ConfigError as e:
        raise RunError(f"lade: '{run_dir}' holds a config.yaml that is not a valid lade config ({e}); "
                       f"refusing to use the folder") from None
    diff = config_mod.differences(saved, cfg, ignore=config_mod.RESUME_SAFE_SECTIONS)
    if not resume:
        what = f"a different config (keys differ: {', '.join(diff)})" if diff else "a run of this config"
        raise RunError(f"lade: run folder '{run_dir}' already holds {what}; pass --resume to continue it or "
                       f"--overwrite to start over")
    if diff:
        raise RunError(f"lade: cannot resume '{run_dir}' with a different config (keys differ: {', '.join(diff)}); "
                       f"use another folder or --overwrite")
    if run_status(run_dir) != "finished" and not (run_dir / CHECKPOINT).is_file() and read_metrics(
            run_dir / "metrics.jsonl", drop_torn_last=True):
        raise RunError(f"lade: cannot resume '{run_dir}': it has logged epochs but no {CHECKPOINT}; pass "
                       f"--overwrite to restart it from epoch 0 on purpose")
    for key in config_mod.RESUME_SAFE_SECTIONS:
        section, sub = key.split(".")
        saved[section][sub] = cfg[section][sub]
    return saved, True


class _RunLock:
    """An exclusive flock on the run folder itself: the OS releases it when the process ends, however it
    ends, so a killed run never leaves a stale lock. A second process asking for it gets RunError."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RunError(f"lade: run folder '{run_dir}' is in use by another lade process; wait for it to "
                           f"end or use another folder") from None

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def _clear_run_dir(run_dir):
    """--overwrite: deletes lade's own files (RUN_FILES and their .tmp), nothing else."""
    for name in RUN_FILES:
        for p in (run_dir / name, run_dir / (name + ".tmp")):
            if p.is_file() or p.is_symlink():
                p.unlink()
    others = sorted(os.listdir(run_dir))
    if others:
        _log(f"--overwrite kept what lade did not write in '{run_dir}': {', '.join(others[:5])}"
             f"{'...' if len(others) > 5 else ''}")


def train(cfg, run_dir, resume=False, overwrite=False, overrides=(), data_root=None, progress=True,
          stop_after=None):
    """Trains `cfg` into `run_dir` and saves everything evaluation needs. `overrides` is the list of
    (key, old, new) already applied to cfg, recorded in run.json. stop_after=N stops after N more
    epochs (the run stays resumable). Returns the run status ('finished' or 'running').

    Everything is checked (config, data, model, loss) before the folder is created or changed; the
    folder is then locked against other lade processes for the whole run."""
    run_dir = Path(run_dir)
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise RunError(f"lade: --stop-after must be a whole number >= 1, got {stop_after!r}")
    cfg, resuming = check_run_dir(run_dir, config_mod.validate(cfg), resume, overwrite)
    if resuming and run_status(run_dir) == "finished":
        _log(f"'{run_dir}' is already finished; nothing to do")
        return "finished"
    data = load_dataset(cfg, data_root)  # before touching the folder: bad data input fails here
    o, r = cfg["optim"], cfg["run"]
    if data.train[0].shape[0] < o["batch_size"]:
        raise config_mod.ConfigError(f"lade config: key 'optim.batch_size' ({o['batch_size']}) exceeds the "
                                     f"{data.train[0].shape[0]} training images")
    set_num_threads(r["threads"])
    net = nn.ResNet32(data.classes, cfg["model"]["variant"], seed=cfg["model"]["seed"])
    opt = nn.SGD(net, o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"], nesterov=o["nesterov"])
    loss = build_loss(cfg, data.counts)
    images, labels = data.train
    loader = data_mod.Loader((images, labels), o["batch_size"], data_mod.CifarTrain(), seed=r["seed"],
                             num_workers=r["num_workers"])
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = _RunLock(run_dir)
        try:
            return _train_locked(cfg, run_dir, resume, overwrite, overrides, data, net, opt, loss, loader,
                                 progress, stop_after)
        finally:
            lock.release()
    finally:
        loader.close()


def _train_locked(cfg, run_dir, resume, overwrite, overrides, data, net, opt, loss, loader, progress, stop_after):
    cfg, resuming = check_run_dir(run_dir, cfg, resume, overwrite)  # again: another process may have written
    if resuming and run_status(run_dir) == "finished":
        _log(f"'{run_dir}' is already finished; nothing to do")
        return "finished"
    o, r = cfg["optim"], cfg["run"]
    if overwrite:
        _clear_run_dir(run_dir)
    cfg_text = config_mod.dump(cfg)
    info_path = run_dir / "run.json"
    info = {"sessions": []}
    if resuming and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError as e:
            raise RunError(f"lade: '{info_path}' is not valid JSON ({e})") from e
        if not isinstance(info, dict) or not isinstance(info.get("sessions"), list):
            raise RunError(f"lade: '{info_path}': expected an object with a list 'sessions', got {str(info)[:60]!r}")
    info["sessions"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed": resuming,
                             "threads": r["threads"], "data_root": str(data.source.parent),
                             "overrides": [{"key": k, "old": old, "new": new} for k, old, new in overrides]})
    if not (run_dir / RUN_MARKER).is_file():
        _save_atomic(run_dir / RUN_MARKER, lambda f: f.write(b"a lade run folder: lade train --overwrite may "
                                                               b"delete the files lade wrote here\n"))
    if not resuming:
        _save_atomic(run_dir / "config.yaml", lambda f: f.write(cfg_text.encode()))
        _save_npy(run_dir / "train_counts.npy", data.counts)
    _save_atomic(info_path, lambda f: f.write(json.dumps(info, indent=1).encode()))

    start = 0
    metrics_path = run_dir / "metrics.jsonl"
    if resuming and (run_dir / CHECKPOINT).is_file():
        start = _load_checkpoint(run_dir, net, opt, cfg)
        _log(f"resuming '{run_dir}' after epoch {start}")
    elif resuming:
        _log(f"'{run_dir}' has no finished epoch yet; starting at epoch 1")
    # keep only the metrics of checkpointed epochs (a kill may fall between the two writes)
    kept = [row for row in read_metrics(metrics_path, drop_torn_last=True) if row["epoch"] <= start]
    _save_atomic(metrics_path, lambda f: f.write("".join(json.dumps(row) + "\n" for row in kept).encode()))

    epochs = o["epochs"]
    last = epochs if stop_after is None else min(epochs, start + stop_after)
    grad = np.empty((o["batch_size"], data.classes), np.float32)
    loader.set_epoch(start)
    bar = Progress(epochs, len(loader), enabled=progress)
    per_epoch = len(loader) * o["batch_size"]
    for epoch in range(start + 1, last + 1):
        lr = epoch_lr(cfg, epoch)
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch - 1)  # LDAM-DRW counts epochs from 0, as its reference code
        t0 = time.perf_counter()
        seen, loss_sum, correct = 0, 0.0, 0
        for b, (x, y) in enumerate(loader, 1):
            value, acc = _step(net, opt, loss, x, y, lr, grad[:len(y)])
            seen += len(y)
            loss_sum += value * len(y)
            correct += acc
            rate = seen / (time.perf_counter() - t0)
            bar.update(epoch, b, loss_sum / seen, correct / seen, rate,
                       per_epoch - seen + (epochs - epoch) * per_epoch)
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, "lr": lr, "loss": loss_sum / seen, "train_acc": correct / seen,
               "images_per_s": seen / seconds, "seconds": seconds}
        if r["eval_every"] and (epoch % r["eval_every"] == 0 or epoch == epochs):
            test_logits = _logits(net, data.test[0], r["eval_batch_size"])
            row["test_top1"] = metrics.accuracy(test_logits, data.test[1])
        kept.append(row)  # the whole file is rewritten atomically: a full disk cannot tear a line
        _save_atomic(metrics_path, lambda f: f.write("".join(json.dumps(row) + "\n" for row in kept).encode()))
        _save_checkpoint(run_dir, net, opt, epoch, cfg_text)
    if last < epochs:
        _log(f"stopped after epoch {last} of {epochs}; continue with --resume")
        return "running"
    _finish(run_dir, cfg, net, data, info)
    return "finished"


def _step(net, opt, loss, x, y, lr, grad):
    """lade.train_step, keeping the logits to count correct predictions."""
    logits = net.forward(x, train=True, defer_running_stats=True)
    correct = int(round(metrics.accuracy(logits, y) * len(y)))
    value, dlogits = loss(logits, y, grad)
    if not math.isfinite(value):
        raise FloatingPointError(f"lade.train: the loss is {value}; the step was not taken")
    net.commit_running_stats()
    net.zero_grad()
    net.backward(dlogits)
    opt.step(lr)
    return float(value), correct


def _logits(net, images, batch_size):
    """Eval-mode raw logits of uint8 images, normalised batch by batch."""
    out = np.empty((images.shape[0], net.num_classes), np.float32)
    transform = data_mod.CifarTest()
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        x = data_mod.augment(images[start:stop], transform)
        net.forward(x, train=False, out=out[start:stop])
    return out


def _finish(run_dir, cfg, net, data, info):
    batch = cfg["run"]["eval_batch_size"]
    t0 = time.perf_counter()
    test_logits = _logits(net, data.test[0], batch)
    _save_npy(run_dir / "test_logits.npy", test_logits)
    _save_npy(run_dir / "test_labels.npy", data.test[1])
    if data.calib is not None:
        _save_npy(run_dir / "calib_logits.npy", _logits(net, data.calib[0], batch))
        _save_npy(run_dir / "calib_labels.npy", data.calib[1])
    rows = read_metrics(run_dir / "metrics.jsonl")
    final = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "epochs": cfg["optim"]["epochs"],
             "train_seconds": sum(r["seconds"] for r in rows), "eval_seconds": time.perf_counter() - t0,
             "raw_test_top1": metrics.accuracy(test_logits, data.test[1]),
             "train_images": int(data.train[0].shape[0]), "test_images": int(data.test[0].shape[0]),
             "calib_images": 0 if data.calib is None else int(data.calib[0].shape[0])}
    _save_atomic(run_dir / "final.json", lambda f: f.write(json.dumps(final, indent=1).encode()))
    _log(f"finished '{run_dir}': raw test top-1 {100 * final['raw_test_top1']:.2f}% "
         f"({final['train_seconds']:.0f} s training)")


def load_arrays(run_dir):
    """The saved arrays of a run folder (None for those it lacks). A file that is unreadable or has the
    wrong dtype or shape raises RunError naming it, what was expected and what came."""
    run_dir = Path(run_dir)
    out = {}
    counts, logits, labels = ("an integer array (classes,)", "iu", 1), ("a float array (n, classes)", "f", 2), (
        "an integer array (n,)", "iu", 1)
    expected = {"train_counts": counts, "test_logits": logits, "test_labels": labels, "calib_logits": logits,
                "calib_labels": labels}
    for name, (what, kinds, ndim) in expected.items():
        p = run_dir / f"{name}.npy"
        if not p.is_file():
            out[name] = None
            continue
        try:
            a = np.load(p, allow_pickle=False)
        except Exception as e:
            raise RunError(f"lade: '{p}' is not a readable .npy file ({type(e).__name__}: {e}); expected {what}") from e
        if not isinstance(a, np.ndarray) or a.dtype.kind not in kinds or a.ndim != ndim or a.size == 0:
            raise RunError(f"lade: '{p}': expected {what}, got {a.dtype} {a.shape}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise RunError(f"lade: '{p}': expected {what} of finite values, got NaN or Inf")
        out[name] = a
    for split in ("test", "calib"):
        logits, labels = out[f"{split}_logits"], out[f"{split}_labels"]
        if (logits is None) != (labels is None):
            raise RunError(f"lade: '{run_dir}' has only one of {split}_logits.npy and {split}_labels.npy")
        if logits is None:
            continue
        classes = logits.shape[1]
        if labels.shape[0] != logits.shape[0]:
            raise RunError(f"lade: '{run_dir / (split + '_labels.npy')}': expected {logits.shape[0]} labels (one per "
                           f"row of {split}_logits.npy), got {labels.shape[0]}")
        if labels.min() < 0 or labels.max() >= classes:
            raise RunError(f"lade: '{run_dir / (split + '_labels.npy')}': expected labels in [0, {classes}), got "
                           f"values in [{labels.min()}, {labels.max()}]")
        if out["train_counts"] is not None and out["train_counts"].shape[0] != classes:
            raise RunError(f"lade: '{run_dir / 'train_counts.npy'}': expected {classes} classes, got "
                           f"{out['train_counts'].shape[0]}")
    return out
