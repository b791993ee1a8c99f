"""Run folders: what lade writes into one, the rules for using one, and how it writes.

A run folder holds::

    config.yaml          the complete, validated config (what the run depends on)
    run.json             per session: start time, overrides, data root, a digest of the data (what
                         `lade features` checks), thread count, lade version, git commit, CPU, kernel
                         variant and precision (what decides the bits)
    metrics.jsonl        one line per finished epoch (loss, accuracy, lr, images/s, seconds)
    checkpoint.npz       written atomically at the start (epoch 0) and after every epoch: weights, BN
                         statistics, SGD velocity and step count, the number of finished epochs (the
                         loader's order is a pure function of (run.seed, epoch), so that number is the
                         whole sampler/RNG state)
    train_counts.npy     per-class training counts (the source prior)
    test_logits.npy      raw logits f on the test set, test_labels.npy
    calib_logits.npy     raw logits on a held-out labelled source set (for EM / BBSE), calib_labels.npy
    final.json           written last: the run finished

Every file is written atomically (``save_atomic``). The folder carries a ``.lade-run`` marker, is
locked against a second lade process (``RunLock``) and, with --overwrite, loses only the files in
``RUN_FILES``. ``lade.app.training.train(cfg, run_dir, resume=True)`` after a kill (even kill -9)
continues from the last checkpoint and ends with the same weights as an uninterrupted run with the
same seed and thread count.
"""
import fcntl
import json
import math
import os
import resource
import subprocess
import zipfile
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

import lade

from lade.app import config as config_mod

__all__ = ["RunError", "CHECKPOINT", "RUN_MARKER", "OUTPUT_MARKER", "RUN_FILES", "output_dir", "check_output_dir", "log",
           "save_atomic", "save_npy", "save_checkpoint", "load_checkpoint", "read_metrics", "run_status", "check_run_dir",
           "RunLock", "clear_run_dir", "load_arrays", "begin_session", "write_metrics", "memory_bytes", "check_array_file"]

CHECKPOINT = "checkpoint.npz"
_CHECKPOINT_VERSION = 1


class RunError(RuntimeError):
    """A run folder cannot be used as asked (another config in it, nothing to resume, ...)."""


def log(msg):
    sys.stderr.write(f"lade: {msg}\n")
    sys.stderr.flush()


def save_atomic(path, write):
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


def save_checkpoint(run_dir, net, opt, epoch, cfg_text, ranks=1):
    """``ranks``: the number of MPI ranks training the run (run.distributed=mpi), 1 otherwise."""
    def write(f):
        np.savez(f, version=np.int64(_CHECKPOINT_VERSION), epoch=np.int64(epoch), params=net.params,
                 buffers=net.buffers, velocity=opt.velocity, steps=np.int64(opt.steps), lr=np.float64(opt.lr),
                 config=np.array(cfg_text), ranks=np.int64(ranks))
    save_atomic(run_dir / CHECKPOINT, write)


def load_checkpoint(run_dir, net, opt, cfg, ranks=1):
    """Restores net and opt from the checkpoint (all or nothing) and returns its epoch. Raises RunError
    naming the file when it is unreadable, damaged, written for a config that differs in a key that
    is not safe to change on resume, or written by a run over another number of MPI ranks (each
    rank's shard of the data depends on it)."""
    path = run_dir / CHECKPOINT
    try:
        with np.load(path, allow_pickle=False) as ck:
            arrays = {name: ck[name] for name in ("version", "epoch", "params", "buffers", "velocity", "steps", "lr",
                                                  "config")}
            arrays["ranks"] = ck["ranks"] if "ranks" in ck.files else np.int64(1)  # written before MPI: 1
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
    if int(arrays["ranks"]) != ranks:
        saved_ranks = int(arrays["ranks"])
        raise RunError(f"lade: '{path}' was written by a run over {saved_ranks} MPI rank"
                       f"{'s' if saved_ranks > 1 else ''}; resume it with the same number (mpirun -np {saved_ranks}), "
                       f"not {ranks}: each rank's share of every batch depends on it")
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


def memory_bytes():
    """What this process may allocate at most: the physical memory, or less under ulimit -v."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return total if soft == resource.RLIM_INFINITY else min(total, soft)


def _claimed_bytes(f, size, who, where):
    """The bytes the .npy header at f's position claims; RunError when the `size` bytes there cannot hold them.
    None for a header that does not parse (the loader names that)."""
    try:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read(f)
    except (ValueError, OSError, EOFError):
        return None
    claimed, held = math.prod(shape) * dtype.itemsize, size - f.tell()
    if claimed > held:
        raise RunError(f"{who} '{where}': its header claims a {dtype} array of shape {shape} ({claimed:,} bytes), the "
                       f"file holds {held:,}; it is damaged")
    return claimed


def check_array_file(path, who):
    """Reads only the headers of a .npy file or of the members of an .npz (their sizes from the zip directory)
    and raises RunError naming `who` and the file when an array claims more bytes than its file holds or than
    memory_bytes(): a damaged header or a zip bomb is refused before anything is allocated."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                claims = []
                for info in z.infolist():
                    with z.open(info) as f:
                        claims.append(_claimed_bytes(f, info.file_size, who, f"{path}:{info.filename}") or 0)
                claimed = sum(claims)
        else:
            with open(path, "rb") as f:
                claimed = _claimed_bytes(f, os.fstat(f.fileno()).st_size, who, path) or 0
    except (OSError, zipfile.BadZipFile, EOFError):
        return  # unreadable: the loader names it
    if claimed > memory_bytes():
        raise RunError(f"{who} '{path}' unpacks to {claimed:,} bytes of arrays, more than this process can allocate "
                       f"({memory_bytes():,} bytes)")


def save_npy(path, array):
    save_atomic(path, lambda f: np.save(f, array))


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
                log(f"'{path}' line {i} is incomplete ({line[:40]!r}...), written when the run was killed; "
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
             "report.md", "results.json", "per_class_accuracy.png", "shifted_tests.png", "reliability.png",
             "features.npz")


OUTPUT_MARKER = ".lade-output"  # written first into every report folder lade creates (evaluate, decoupled, compare)


def check_output_dir(out_dir):
    """Whether the report folder `out_dir` is lade's (it holds OUTPUT_MARKER or RUN_MARKER), without touching
    it. An existing folder that is not empty and holds neither is refused (RunError naming it): its files are
    not lade's to replace."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"lade: output folder '{out_dir}' exists and is not a folder")
    ours = any((out_dir / marker).is_file() for marker in (OUTPUT_MARKER, RUN_MARKER))
    if out_dir.is_dir() and not ours and any(out_dir.iterdir()):
        raise RunError(f"lade: output folder '{out_dir}' is not empty and has no {OUTPUT_MARKER} marker, so lade did "
                       f"not make it; refusing to write into it (use another --out, or an empty folder)")
    return ours


def output_dir(out_dir):
    """Creates the report folder `out_dir` with OUTPUT_MARKER, or reuses one lade made before; refuses
    another as check_output_dir does. Returns the folder as a Path."""
    out_dir = Path(out_dir)
    ours = check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not ours:
        save_atomic(out_dir / OUTPUT_MARKER, lambda f: f.write(b"a lade report folder: lade may replace the files it "
                                                               b"wrote here\n"))
    return out_dir


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
    # a kill while lade wrote its first file (the marker) leaves only that file's .tmp: still an empty folder
    leftovers = {name + ".tmp" for name in RUN_FILES}
    has_files = run_dir.is_dir() and any(p.name not in leftovers for p in run_dir.iterdir())
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


class RunLock:
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


def clear_run_dir(run_dir):
    """--overwrite: deletes lade's own files (RUN_FILES and their .tmp), nothing else."""
    for name in RUN_FILES:
        for p in (run_dir / name, run_dir / (name + ".tmp")):
            if p.is_file() or p.is_symlink():
                p.unlink()
    others = sorted(os.listdir(run_dir))
    if others:
        log(f"--overwrite kept what lade did not write in '{run_dir}': {', '.join(others[:5])}"
             f"{'...' if len(others) > 5 else ''}")


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
        check_array_file(p, "lade:")
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


def source_commit():
    """The git commit of the checkout lade is imported from ('+dirty' when its tracked files differ), or
    None outside a git checkout (an installed wheel)."""
    root = Path(lade.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def begin_session(run_dir, cfg_text, resuming, overrides, threads, data_root, train_counts, ranks=1,
                  data_digest=None, *, precision):
    """Records a training session in run.json (appended on resume; data_digest: Dataset.digest() of the
    data it trains on) and, for a new run, writes the marker, config.yaml and train_counts.npy. Returns
    run.json's content."""
    info_path = run_dir / "run.json"
    info = {"sessions": []}
    if resuming and info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError as e:
            raise RunError(f"lade: '{info_path}' is not valid JSON ({e})") from e
        if not isinstance(info, dict) or not isinstance(info.get("sessions"), list):
            raise RunError(f"lade: '{info_path}': expected an object with a list 'sessions', got {str(info)[:60]!r}")
    cpu = lade.cpu_info()
    info["sessions"].append({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed": resuming,
                             "lade_version": lade.__version__, "commit": source_commit(), "cpu": cpu["model"],
                             "kernel_variant": cpu["variant"], "precision": precision, "threads": threads,
                             "ranks": ranks,
                             "data_root": str(data_root), "data_digest": data_digest,
                             "overrides": [{"key": k, "old": old, "new": new} for k, old, new in overrides]})
    if not (run_dir / RUN_MARKER).is_file():
        save_atomic(run_dir / RUN_MARKER, lambda f: f.write(b"a lade run folder: lade train --overwrite may "
                                                              b"delete the files lade wrote here\n"))
    if not resuming:
        save_atomic(run_dir / "config.yaml", lambda f: f.write(cfg_text.encode()))
        save_npy(run_dir / "train_counts.npy", train_counts)
    save_atomic(info_path, lambda f: f.write(json.dumps(info, indent=1).encode()))
    return info


def write_metrics(path, rows):
    """metrics.jsonl, rewritten whole and atomically: a full disk cannot tear a line."""
    save_atomic(path, lambda f: f.write("".join(json.dumps(row) + "\n" for row in rows).encode()))
