"""Synchronous data-parallel training over MPI (mpi4py, imported only when a function here needs it).

Every rank holds the whole model and trains on its shard of each global batch::

    import lade, lade.distributed
    comm = lade.distributed.world()                        # MPI.COMM_WORLD
    sampler = lade.distributed.ShardSampler(lade.sampling.InstanceSampler(n, seed), 256, comm.rank, comm.size)
    loader = lade.data.Loader(train, sampler.local_batch_size, transform, sampler=sampler,
                              seed=lade.distributed.rank_seed(seed, comm.rank, comm.size))
    loss = lade.distributed.GlobalBatchLoss(lade.losses.LADELoss(prior, alpha=0.1, remine_lambda=0.01), comm)
    for x, y in loader:
        lade.train_step(net, opt, x, y, loss, reduce_gradients=lade.distributed.GradientSum(comm))

- **Data.** The global batches of an epoch are consecutive slices of the base sampler's order for that
  epoch; rank r of N takes rows [r*B/N, (r+1)*B/N) of each. The shard is a pure function of (seed, epoch,
  rank, N), and the union of the shards is exactly the single-process epoch.
- **Loss.** ``GlobalBatchLoss`` gathers the logits and labels of every rank (Allgatherv), evaluates the
  loss over the whole global batch on every rank (LADER's per-class averages need it, spec §1.6; it
  is right for any loss), and hands back only the rows of this rank's samples of d loss / d logits.
  Each rank's backward then gives its share of the global gradient, and the shares add up to it.
- **Gradients.** ``GradientSum`` adds those shares in place on the model's flat float32 gradient buffer:
  one MPI Allreduce(IN_PLACE, SUM) per step, zero-copy through the buffer protocol. The sum (not the
  mean) is right because the loss is already the mean over the global batch.
- **Batch norm** is per replica by default (each rank normalises with its own shard's statistics, as the
  official multi-GPU code). ``average_buffers`` averages the running statistics across ranks so that every
  rank holds the same model before it is evaluated or saved. Synchronised BN is the option
  ``net.set_bn_reducer(BatchNormSum(comm))``: every BN layer then normalises with the statistics of the
  global batch, through two small Allreduce calls per BN layer in the forward and one in the backward
  (``sync_bn_bytes_per_step``), and the running statistics are the same on every rank without averaging.
- **Causal Norm's running feature mean** (``fc.feature_mean``, a buffer beside the BN statistics) moves by
  the mean of its own shard's features, and ``average_buffers`` averages it with them. Its update is linear
  and the shards are equal, so the mean over the ranks is the running mean of the means of all the features
  the ranks computed (with per-replica BN, each rank's features follow its own batch statistics). Under
  synchronised BN the reducer also sums the features once per training forward, and every rank moves the
  mean by the global batch's mean.
"""
import sys

import numpy as np

from lade import _args

__all__ = ["world", "job_label", "abort_job", "ShardSampler", "rank_seed", "GlobalBatchLoss", "GradientSum",
           "BatchNormSum", "average_buffers", "broadcast_arrays", "gradient_bytes_per_step", "gather_bytes_per_step",
           "sync_bn_bytes_per_step"]


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("lade.distributed: needs mpi4py (pip install mpi4py; Open MPI from "
                          "'apt-get install openmpi-bin libopenmpi-dev')") from e
    return MPI


def world():
    """MPI.COMM_WORLD (initialises MPI on first use)."""
    return _mpi().COMM_WORLD


def _running_world():
    """COMM_WORLD if this process runs MPI (mpi4py imported and initialised) with more than one rank, else None."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized() or MPI.COMM_WORLD.size < 2:
        return None
    return MPI.COMM_WORLD


def job_label():
    """' (rank r of N)' inside a multi-rank MPI job, else '' (to say which rank a message comes from)."""
    comm = _running_world()
    return "" if comm is None else f" (rank {comm.rank} of {comm.size})"


def abort_job(code):
    """Inside a multi-rank MPI job, ends every rank with exit status ``code`` (MPI_Abort): one rank that
    stops on an error must not leave the others waiting in a collective call forever. Outside one it
    returns and does nothing."""
    comm = _running_world()
    if comm is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        comm.Abort(code)


def _rank_size(rank, size, func):
    size = _args.whole(size, func, "size", 1)
    rank = _args.whole(rank, func, "rank", 0, size - 1)
    return rank, size


class ShardSampler:
    """Rank ``rank`` of ``size``'s share of ``base``'s epochs: the base order cut into global batches of
    ``global_batch_size`` (an incomplete last batch is dropped, as the loader's drop_last), of each the
    rank's contiguous slice of ``global_batch_size // size`` rows. Use it with a Loader whose batch size
    is ``local_batch_size``."""

    def __init__(self, base, global_batch_size, rank, size):
        func = "lade.distributed.ShardSampler"
        if not (hasattr(base, "epoch_indices") and hasattr(base, "__len__")):
            raise TypeError(f"{func}: argument 'base' must have __len__ and epoch_indices(epoch), "
                            f"got {type(base).__name__}")
        self.rank, self.size = _rank_size(rank, size, func)
        self.global_batch_size = _args.whole(global_batch_size, func, "global_batch_size", 1)
        if self.global_batch_size % self.size:
            raise ValueError(f"{func}: argument 'global_batch_size' ({self.global_batch_size}) must be a multiple "
                             f"of the number of ranks ({self.size})")
        self.local_batch_size = self.global_batch_size // self.size
        self.batches = len(base) // self.global_batch_size
        if self.batches == 0:
            raise ValueError(f"{func}: the base sampler's {len(base)} samples per epoch do not fill one global "
                             f"batch of {self.global_batch_size}")
        self.base = base

    def __len__(self):
        return self.batches * self.local_batch_size

    def epoch_indices(self, epoch):
        order = np.asarray(self.base.epoch_indices(epoch), dtype=np.int64)
        batches = order[:self.batches * self.global_batch_size].reshape(self.batches, self.size,
                                                                        self.local_batch_size)
        return np.ascontiguousarray(batches[:, self.rank, :].reshape(-1))


def rank_seed(seed, rank, size):
    """The augmentation seed of rank ``rank`` of ``size``: distinct per rank (so ranks do not draw the
    same crops for their k-th samples), a pure function of the three numbers."""
    rank, size = _rank_size(rank, size, "lade.distributed.rank_seed")
    seed = _args.whole(seed, "lade.distributed.rank_seed", "seed", 0, 2 ** 64 - 1)
    if size == 1:
        return seed
    return int(np.random.SeedSequence([seed, rank, size]).generate_state(1, np.uint64)[0])


class GlobalBatchLoss:
    """``loss`` evaluated over the global batch: ``__call__(logits, labels, grad)`` gathers every rank's
    logits (n_r, C) and labels (n_r,) in rank order, computes ``loss`` on all of them (the same value on
    every rank) and returns (value, d value / d own logits) with the gradient written into ``grad``
    (n_r, C). ``logits`` and ``labels`` of the whole batch stay readable as ``global_logits`` and
    ``global_labels`` (for metrics). Costs per step: three Allgather(v) calls moving
    n*C*4 + n*8 bytes (n the global batch) and the loss computed over the whole batch on every rank.

    Attributes of ``loss`` (``prior``, ``test_time_adjust``, ``set_epoch``, ...) pass through."""

    def __init__(self, loss, comm):
        if not callable(loss):
            raise TypeError(f"lade.distributed.GlobalBatchLoss: argument 'loss' must be callable, got "
                            f"{type(loss).__name__}")
        self.loss, self.comm = loss, comm
        self.global_logits = self.global_labels = None
        self._grad = None

    def __getattr__(self, name):  # only called for names this object lacks
        if name == "loss":
            raise AttributeError(name)
        return getattr(self.loss, name)

    def __call__(self, logits, labels, grad=None):
        func = "lade.distributed.GlobalBatchLoss"
        MPI = _mpi()
        if not (isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.ndim == 2
                and logits.flags.c_contiguous):
            raise TypeError(f"{func}: argument 'logits' must be a C-contiguous float32 array (n, C), got "
                            f"{getattr(logits, 'dtype', type(logits).__name__)} {getattr(logits, 'shape', '')}")
        labels = np.asarray(labels)
        if labels.dtype != np.int64 or labels.shape != (logits.shape[0],) or not labels.flags.c_contiguous:
            raise TypeError(f"{func}: argument 'labels' must be a contiguous int64 array ({logits.shape[0]},), got "
                            f"{labels.dtype} {labels.shape}")
        n, classes = logits.shape
        counts = np.empty(self.comm.size, np.int64)
        self.comm.Allgather(np.array([n], np.int64), counts)
        total, offset = int(counts.sum()), int(counts[:self.comm.rank].sum())
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        if self.global_logits is None or self.global_logits.shape != (total, classes):
            self.global_logits = np.empty((total, classes), np.float32)
            self.global_labels = np.empty(total, np.int64)
            self._grad = np.empty((total, classes), np.float32)
        self.comm.Allgatherv(logits, [self.global_logits, counts * classes, displs * classes, MPI.FLOAT])
        self.comm.Allgatherv(labels, [self.global_labels, counts, displs, MPI.INT64_T])
        value, full = self.loss(self.global_logits, self.global_labels, self._grad)
        if grad is None:
            grad = np.empty_like(logits)
        grad[...] = full[offset:offset + n]
        return value, grad


class _InPlaceSum:
    """Adds a buffer over all ranks in place: one MPI Allreduce(IN_PLACE, SUM), through the buffer
    protocol (no copy). Subclasses name the buffer's dtype."""
    dtype, mpi_type, arg = None, None, None

    def __init__(self, comm):
        self.comm = comm

    def __call__(self, buf):
        if not (isinstance(buf, np.ndarray) and buf.dtype == self.dtype and buf.flags.c_contiguous
                and buf.flags.writeable):
            raise TypeError(f"lade.distributed.{type(self).__name__}: argument '{self.arg}' must be a writable "
                            f"C-contiguous {np.dtype(self.dtype).name} array, got "
                            f"{getattr(buf, 'dtype', type(buf).__name__)}")
        MPI = _mpi()
        self.comm.Allreduce(MPI.IN_PLACE, [buf, getattr(MPI, self.mpi_type)], op=MPI.SUM)


class GradientSum(_InPlaceSum):
    """The ``reduce_gradients`` hook of ``lade.train_step``: adds the flat float32 gradient buffers of
    all ranks in place. With ``GlobalBatchLoss`` the sum is the gradient of the global batch's mean loss."""
    dtype, mpi_type, arg = np.float32, "FLOAT", "grads"


class BatchNormSum(_InPlaceSum):
    """The reducer of synchronised batch norm (``lade.ResNet32.set_bn_reducer``): adds a BN layer's
    per-channel sums over the ranks, in place, on the float64 view of the C buffer. Every rank must set
    it, and all ranks then run the same BN layers in the same order, as data-parallel training does."""
    dtype, mpi_type, arg = np.float64, "DOUBLE", "buf"


def average_buffers(model, comm):
    """Replaces every rank's running statistics (BN, Causal Norm's feature mean) by their mean over the
    ranks (in place)."""
    MPI = _mpi()
    comm.Allreduce(MPI.IN_PLACE, [model.buffers, MPI.FLOAT], op=MPI.SUM)
    model.buffers /= np.float32(comm.size)


def broadcast_arrays(arrays, comm, root=0):
    """Overwrites each array (in place, zero-copy) with root's; all ranks pass arrays of equal shapes."""
    for a in arrays:
        comm.Bcast(a, root=root)


def gradient_bytes_per_step(num_params, size):
    """Bytes each rank sends (and receives) per step in a ring all-reduce of the float32 gradient:
    2 (N - 1) / N x 4 x num_params."""
    return 2 * (size - 1) / size * 4 * num_params


def sync_bn_bytes_per_step(model, size):
    """(calls, bytes) of synchronised batch norm per step and rank: per BN layer of C channels two
    all-reduces forward (C + 1 and C float64) and one backward (2C), with the Causal Norm classifier one
    more forward (its D features' sums and the image count, D + 1), each a ring all-reduce moving
    2 (N - 1) / N of its size."""
    stats = model.running_stats()
    channels = [v.shape[0] for name, v in stats.items() if name.endswith(".running_mean")]
    doubles = sum((c + 1) + c + 2 * c for c in channels)
    calls = 3 * len(channels)
    if "fc.feature_mean" in stats:
        calls, doubles = calls + 1, doubles + stats["fc.feature_mean"].shape[0] + 1
    return calls, 2 * (size - 1) / size * 8 * doubles


def gather_bytes_per_step(global_batch, classes, size):
    """Bytes each rank receives per step gathering the other ranks' logits (float32) and labels (int64)."""
    return (size - 1) / size * global_batch * (classes * 4 + 8)
