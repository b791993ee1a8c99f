"""Training a config into a run folder: the loss the config names, the learning rate of each
epoch, the loop (one ``lade.train_step`` per batch), the progress line, and the final
evaluation that saves the logits the reports read (lade.app.evaluation never retrains).

``train(cfg, run_dir, resume=True)`` after a kill (even kill -9) continues from the last
checkpoint and ends with the same weights as an uninterrupted run with the same seed and
thread count; the run folder's files and rules are in lade.app.runs.

With run.distributed=mpi (``mpirun -np N python -m lade train ...``) every rank runs this loop on
its shard of each global batch (lade.distributed: the loss over the gathered global batch, the
gradients summed in place, BN per replica with the running statistics averaged at the end of each
epoch, or with run.sync_bn over the global batch). Rank 0 alone reads and writes the run folder;
the checkpoint records N, and a resume with another N is refused.
"""
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from lade import data as data_mod
from lade import distributed, losses, metrics, nn, priors, sampling
from lade._C import set_num_threads
from lade.app import config as config_mod
from lade.app.datasets import FileSplit, load_dataset
from lade.app.runs import (CHECKPOINT, RunError, RunLock, begin_session, check_run_dir, clear_run_dir, load_checkpoint,
                           log, read_metrics, run_status, save_atomic, save_checkpoint, save_npy, write_metrics)

__all__ = ["train", "build_model", "eval_logits", "build_loss", "build_sampler", "epoch_lr", "Progress",
           "distributed_comm"]


def distributed_comm(cfg):
    """MPI's COMM_WORLD for run.distributed=mpi (MPI starts here), None for run.distributed=none."""
    return distributed.world() if cfg["run"]["distributed"] == "mpi" else None


def build_model(cfg, classes):
    """The config's network (model.arch, variant, stem_stride, classifier and its options), initialised from
    model.seed."""
    m = cfg["model"]
    classifier = {k: m[k] for k in ("classifier", *config_mod.CLASSIFIER_OPTIONS[m["classifier"]])}
    if m["arch"] == "resnet18":
        return nn.ResNet18(classes, seed=m["seed"], stem_stride=m["stem_stride"], **classifier)
    return nn.ResNet32(classes, m["variant"], seed=m["seed"], stem_stride=m["stem_stride"], **classifier)


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


def build_sampler(cfg, labels, classes):
    """The configured epoch order of the training images (data.sampler), seeded by run.seed like
    the loader; the one owner of the default. Instance sampling's order is the loader's own seeded
    shuffle (lade.sampling.InstanceSampler), so a run's global batches are the same with one
    process or several MPI ranks."""
    kind, seed = cfg["data"]["sampler"], cfg["run"]["seed"]
    if kind == "class_aware":
        return sampling.ClassAwareSampler(labels, classes, seed=seed)
    if kind == "square_root":
        return sampling.SquareRootSampler(labels, classes, seed=seed)
    if kind == "progressive":
        return sampling.ProgressivelyBalancedSampler(labels, classes, cfg["optim"]["epochs"], seed=seed)
    return sampling.InstanceSampler(len(labels), seed=seed)


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
    terminal it is redrawn in place; otherwise (a log file, a pipe) one line ends each epoch."""

    def __init__(self, epochs, batches, stream=None, enabled=True):
        self.epochs, self.batches = epochs, batches
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, epoch, batch, loss, acc, rate, remaining_images):
        if not self.enabled:
            return
        last = batch == self.batches
        if not self.tty and not last:
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


def train(cfg, run_dir, resume=False, overwrite=False, overrides=(), data_root=None, progress=True,
          stop_after=None):
    """Trains `cfg` into `run_dir` and saves everything evaluation needs. `overrides` is the list of
    (key, old, new) already applied to cfg, recorded in run.json. stop_after=N stops after N more
    epochs (the run stays resumable). Returns the run status ('finished' or 'running').

    Everything is checked (config, data, model, loss) before the folder is created or changed; the
    folder is then locked against other lade processes for the whole run.

    With run.distributed=mpi every rank of ``mpirun`` calls this; rank 0 alone reads and writes the
    folder and hands the other ranks its config, starting epoch and weights (lade.distributed)."""
    run_dir = Path(run_dir)
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise RunError(f"lade: --stop-after must be a whole number >= 1, got {stop_after!r}")
    cfg = config_mod.validate(cfg)
    comm = distributed_comm(cfg)
    writer = comm is None or comm.rank == 0
    if writer:
        cfg, resuming = check_run_dir(run_dir, cfg, resume, overwrite)
        finished = resuming and run_status(run_dir) == "finished"
    if comm is not None:  # the other ranks never look at the folder: they use rank 0's view of it
        cfg, finished = comm.bcast((cfg, finished) if writer else None, root=0)
    if finished:
        if writer:
            log(f"'{run_dir}' is already finished; nothing to do")
        return "finished"
    data = load_dataset(cfg, data_root)  # before touching the folder: bad data input fails here
    o, r = cfg["optim"], cfg["run"]
    if data.train[0].shape[0] < o["batch_size"]:
        raise config_mod.ConfigError(f"lade config: key 'optim.batch_size' ({o['batch_size']}) exceeds the "
                                     f"{data.train[0].shape[0]} training images")
    if comm is not None and o["batch_size"] % comm.size:
        raise config_mod.ConfigError(f"lade config: key 'optim.batch_size' ({o['batch_size']}) must be a multiple of "
                                     f"the number of MPI ranks ({comm.size}) with run.distributed=mpi")
    if r["sync_bn"] and comm is None:
        raise config_mod.ConfigError("lade config: key 'run.sync_bn' (true) needs run.distributed=mpi; a single "
                                     "process's batch norm already uses its whole batch")
    set_num_threads(r["threads"])
    net = build_model(cfg, data.classes)
    try:
        net.precision = r["precision"]
    except ValueError as e:  # no bfloat16 kernels on this CPU: stop, never train in float32 instead
        raise config_mod.ConfigError(f"lade config: key 'run.precision' ({r['precision']}) cannot run here: {e}") \
            from e
    if r["sync_bn"]:
        net.set_bn_reducer(distributed.BatchNormSum(comm))
    opt = nn.SGD(net, o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"], nesterov=o["nesterov"])
    loss = build_loss(cfg, data.counts)
    images, labels = data.train
    sampler = build_sampler(cfg, labels, data.classes)
    if isinstance(images, FileSplit):  # JPEGs decoded by the C loader, ImageNet-style augmentation
        source, transform = images.files, data_mod.ImageNetTrain(size=cfg["data"]["resolution"])
        sampler = _SubsetSampler(images.indices, sampler)
    else:
        source, transform = (images, labels), data_mod.CifarTrain()
    batch_size, seed = o["batch_size"], r["seed"]
    if comm is not None:  # this rank's rows of every global batch; the loss over the global batch
        sampler = distributed.ShardSampler(sampler, batch_size, comm.rank, comm.size)
        batch_size, seed = sampler.local_batch_size, distributed.rank_seed(seed, comm.rank, comm.size)
        loss = distributed.GlobalBatchLoss(loss, comm)
    loader = data_mod.Loader(source, batch_size, transform, seed=seed, num_workers=r["num_workers"], sampler=sampler)
    lock = None
    try:
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run_dir)
        return _train_locked(cfg, run_dir, resume, overwrite, overrides, data, net, opt, loss, loader,
                             progress, stop_after, comm)
    finally:
        if lock is not None:
            lock.release()
        loader.close()


def _begin(cfg, run_dir, resume, overwrite, overrides, data, net, opt, ranks):
    """The writer's side of starting: checks the locked folder again, records the session, restores
    the checkpoint. Returns (the config, the epoch to start after, the kept metrics rows, run.json's
    content), or None when another process finished the run meanwhile."""
    cfg, resuming = check_run_dir(run_dir, cfg, resume, overwrite)  # again: another process may have written
    if resuming and run_status(run_dir) == "finished":
        log(f"'{run_dir}' is already finished; nothing to do")
        return None
    if overwrite:
        clear_run_dir(run_dir)
    start = 0
    if resuming and (run_dir / CHECKPOINT).is_file():  # first: a checkpoint it refuses leaves the folder as it was
        start = load_checkpoint(run_dir, net, opt, cfg, ranks)
        log(f"resuming '{run_dir}' after epoch {start}")
    elif resuming:
        log(f"'{run_dir}' has no finished epoch yet; starting at epoch 1")
    info = begin_session(run_dir, config_mod.dump(cfg), resuming, overrides, cfg["run"]["threads"],
                         data.root, data.counts, ranks, data.digest(), precision=net.precision)
    if not (run_dir / CHECKPOINT).is_file():
        # epoch 0, before any metrics row: a kill or a full disk during the first epoch's checkpoint
        # leaves this one to resume from (logged epochs without a checkpoint are refused)
        save_checkpoint(run_dir, net, opt, 0, config_mod.dump(cfg), ranks)
    metrics_path = run_dir / "metrics.jsonl"
    # keep only the metrics of checkpointed epochs (a kill may fall between the two writes)
    kept = [row for row in read_metrics(metrics_path, drop_torn_last=True) if row["epoch"] <= start]
    write_metrics(metrics_path, kept)
    return cfg, start, kept, info


def _train_locked(cfg, run_dir, resume, overwrite, overrides, data, net, opt, loss, loader, progress, stop_after,
                  comm):
    writer = comm is None or comm.rank == 0
    ranks = 1 if comm is None else comm.size
    begun = _begin(cfg, run_dir, resume, overwrite, overrides, data, net, opt, ranks) if writer else None
    start = None if begun is None else begun[1]
    if comm is not None:  # every rank starts from rank 0's epoch, weights and optimiser state
        start = comm.bcast(start, root=0)
        if start is not None:
            distributed.broadcast_arrays([net.params, net.buffers, opt.velocity], comm)
            opt.steps, opt.lr = comm.bcast((opt.steps, opt.lr), root=0)
    if start is None:
        return "finished"
    if writer:
        cfg, _, kept, info = begun
    o, r = cfg["optim"], cfg["run"]
    cfg_text = config_mod.dump(cfg)
    metrics_path = run_dir / "metrics.jsonl"
    reduce = None if comm is None else distributed.GradientSum(comm)

    epochs = o["epochs"]
    last = epochs if stop_after is None else min(epochs, start + stop_after)
    grad = np.empty((o["batch_size"], data.classes), np.float32)
    loader.set_epoch(start)
    bar = Progress(epochs, len(loader), enabled=progress and writer)
    per_epoch = len(loader) * o["batch_size"]
    for epoch in range(start + 1, last + 1):
        lr = epoch_lr(cfg, epoch)
        if hasattr(loss, "set_epoch"):
            loss.set_epoch(epoch - 1)  # LDAM-DRW counts epochs from 0, as its reference code
        t0 = time.perf_counter()
        seen, loss_sum, correct, step_seconds = 0, 0.0, 0, 0.0
        for b, (x, y) in enumerate(loader, 1):
            t_step = time.perf_counter()
            value, logits = nn.train_step(net, opt, x, y, loss, lr=lr, grad=grad[:len(y)], return_logits=True,
                                          reduce_gradients=reduce)
            step_seconds += time.perf_counter() - t_step
            if comm is not None:  # the metrics are those of the global batch
                logits, y = loss.global_logits, loss.global_labels
            seen += len(y)
            loss_sum += value * len(y)
            correct += int(round(metrics.accuracy(logits, y) * len(y)))
            rate = seen / (time.perf_counter() - t0)
            bar.update(epoch, b, loss_sum / seen, correct / seen, rate,
                       per_epoch - seen + (epochs - epoch) * per_epoch)
        if comm is not None and not r["sync_bn"]:  # BN ran per replica: every rank ends the epoch alike
            distributed.average_buffers(net, comm)
        if not writer:
            continue
        seconds = time.perf_counter() - t0
        # seconds = the epoch's training loop; step_seconds its train_step calls (the rest is waiting
        # for batches and the per-batch metrics); eval_seconds the test pass, when there is one
        row = {"epoch": epoch, "lr": lr, "loss": loss_sum / seen, "train_acc": correct / seen,
               "images_per_s": seen / seconds, "seconds": seconds, "step_seconds": step_seconds}
        if r["eval_every"] and (epoch % r["eval_every"] == 0 or epoch == epochs):
            t_eval = time.perf_counter()
            test_logits = eval_logits(net, data.test[0], r["eval_batch_size"], cfg["data"]["resolution"])
            row["test_top1"] = metrics.accuracy(test_logits, data.test[1])
            row["eval_seconds"] = time.perf_counter() - t_eval
        kept.append(row)  # the whole file is rewritten atomically: a full disk cannot tear a line
        write_metrics(metrics_path, kept)
        save_checkpoint(run_dir, net, opt, epoch, cfg_text, ranks)
    if last < epochs:
        if writer:
            log(f"stopped after epoch {last} of {epochs}; continue with --resume")
        return "running"
    if writer:
        _finish(run_dir, cfg, net, data, info)
    return "finished"


class _SubsetSampler:
    """Entries `indices` of a file list in the order of `inner`, a sampler over the subset's own
    positions."""

    def __init__(self, indices, inner):
        self.indices, self.inner = indices, inner

    def __len__(self):
        return len(self.inner)

    def epoch_indices(self, epoch):
        return np.ascontiguousarray(self.indices[self.inner.epoch_indices(epoch)])


class _FixedOrder:
    def __init__(self, indices):
        self.indices = indices

    def __len__(self):
        return len(self.indices)

    def epoch_indices(self, epoch):
        return self.indices


def eval_logits(net, images, batch_size, resolution=32, features=None):
    """Eval-mode raw logits of uint8 images (or a FileSplit, resized and centre-cropped to
    `resolution`), normalised batch by batch. `features` (n, net.feature_dim) float32, if given,
    receives the pooled features."""
    out = np.empty((images.shape[0], net.num_classes), np.float32)
    if isinstance(images, FileSplit):
        transform = data_mod.ImageNetEval(resize=resolution * 8 // 7, crop=resolution)
        batches = data_mod.Loader(images.files, batch_size, transform, sampler=_FixedOrder(images.indices),
                                  drop_last=False, num_workers=1)
    else:
        transform = data_mod.CifarTest()
        batches = contextlib.nullcontext((data_mod.augment(images[start:start + batch_size], transform), None)
                                         for start in range(0, images.shape[0], batch_size))
    with batches as stream:
        start = 0
        for x, _ in stream:
            net.forward(x, train=False, out=out[start:start + len(x)])
            if features is not None:
                features[start:start + len(x)] = net.features
            start += len(x)
    return out


def _finish(run_dir, cfg, net, data, info):
    batch = cfg["run"]["eval_batch_size"]
    t0 = time.perf_counter()
    test_logits = eval_logits(net, data.test[0], batch, cfg["data"]["resolution"])
    save_npy(run_dir / "test_logits.npy", test_logits)
    save_npy(run_dir / "test_labels.npy", data.test[1])
    if data.calib is not None:
        save_npy(run_dir / "calib_logits.npy", eval_logits(net, data.calib[0], batch, cfg["data"]["resolution"]))
        save_npy(run_dir / "calib_labels.npy", data.calib[1])
    rows = read_metrics(run_dir / "metrics.jsonl")
    final = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "epochs": cfg["optim"]["epochs"],
             "train_seconds": sum(r["seconds"] for r in rows), "eval_seconds": time.perf_counter() - t0,
             "raw_test_top1": metrics.accuracy(test_logits, data.test[1]),
             "train_images": int(data.train[0].shape[0]), "test_images": int(data.test[0].shape[0]),
             "calib_images": 0 if data.calib is None else int(data.calib[0].shape[0])}
    save_atomic(run_dir / "final.json", lambda f: f.write(json.dumps(final, indent=1).encode()))
    log(f"finished '{run_dir}': raw test top-1 {100 * final['raw_test_top1']:.2f}% "
         f"({final['train_seconds']:.0f} s training)")
