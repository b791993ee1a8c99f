"""Run under `mpirun -np N` by tests/test_distributed.py (not a test module itself).

    python distributed_worker.py steps OUT.npz    k data-parallel steps of the tiny problem; rank 0 saves the
                                                  gradient of every step and the final parameters
    python distributed_worker.py sync_steps OUT.npz [CLASSIFIER [STEPS]]  the same with synchronised batch
                                                  norm; rank 0 also saves every rank's running statistics
                                                  (CLASSIFIER causal_norm: the Causal Norm classifier)
    python distributed_worker.py kill             rank 1 SIGKILLs itself after one step; the others go on
"""
import os
import signal
import sys

import numpy as np

import lade
import lade.distributed as dist

# The tiny problem, shared with the single-process emulation in test_distributed.py.
CLASSES, GLOBAL_BATCH, STEPS, SAMPLES, SEED = 10, 8, 3, 40, 7


# the Causal Norm classifier's CIFAR values (spec §5.1)
CAUSAL_NORM = dict(classifier="causal_norm", heads=2, tau=16.0, gamma=1 / 32, alpha=1.5, mean_momentum=0.9)


def problem(classifier="linear"):
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((SAMPLES, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, CLASSES, SAMPLES).astype(np.int64)
    labels[:CLASSES] = np.arange(CLASSES)  # every class present, so the prior has no zero
    prior = lade.priors.prior_from_counts(lade.priors.class_counts(labels, CLASSES))
    net = lade.ResNet32(CLASSES, "lade", seed=SEED, **(CAUSAL_NORM if classifier == "causal_norm" else {}))
    opt = lade.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss = lade.losses.LADELoss(prior, alpha=0.5, remine_lambda=0.1)  # LADER needs the whole batch
    return images, labels, net, opt, loss


def base_sampler():
    return lade.sampling.InstanceSampler(SAMPLES, seed=SEED)


def main(mode, out=None, classifier="linear", steps=STEPS):
    lade.set_num_threads(1)
    comm = dist.world()
    images, labels, net, opt, loss = problem(classifier)
    sampler = dist.ShardSampler(base_sampler(), GLOBAL_BATCH, comm.rank, comm.size)
    order = sampler.epoch_indices(0).reshape(-1, sampler.local_batch_size)
    loss = dist.GlobalBatchLoss(loss, comm)
    if mode == "sync_steps":
        net.set_bn_reducer(dist.BatchNormSum(comm))
    grads = []

    def reduce(g):
        dist.GradientSum(comm)(g)
        grads.append(g.copy())

    for step in range(int(steps)):
        idx = order[step]
        lade.train_step(net, opt, np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx]), loss,
                        reduce_gradients=reduce)
        if mode == "kill" and comm.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    if mode == "steps" and comm.rank == 0:
        np.savez(out, grads=np.stack(grads), params=net.params, logits=loss.global_logits)
    if mode == "sync_steps":
        buffers = comm.gather(net.buffers.copy(), root=0)
        if comm.rank == 0:
            np.savez(out, grads=np.stack(grads), params=net.params, logits=loss.global_logits,
                     buffers=np.stack(buffers))


if __name__ == "__main__":
    main(*sys.argv[1:])
