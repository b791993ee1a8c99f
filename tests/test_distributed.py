"""Data-parallel training over MPI (lade.distributed, `lade train run.distributed=mpi`), run with
`mpirun -np 2 --oversubscribe`, one thread per rank. Each rank is a subprocess; every mpirun is given a
time limit, so a hang fails the test instead of stalling the suite."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import lade
import lade.distributed as dist
from conftest import REPO_ROOT
from test_cli import TINY, tiny_root  # noqa: F401  (the fixture: a tiny CIFAR-10-format data set)

sys.path.insert(0, os.path.dirname(__file__))
import distributed_worker as worker  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1")
MPIRUN = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none"]


def mpirun(args, timeout=120, np_=2, **kw):
    cmd = MPIRUN[:2] + [str(np_)] + MPIRUN[3:] + [str(a) for a in args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------------- library pieces

def test_shards_are_a_pure_function_and_cover_each_global_batch_once():
    base = lade.sampling.InstanceSampler(103, seed=3)
    shards = [dist.ShardSampler(base, 12, r, 3) for r in range(3)]
    assert len(shards[0]) == 8 * 4  # 8 full global batches of 12, 4 rows each; 7 samples dropped
    for epoch in (0, 5):
        order = base.epoch_indices(epoch)[:96].reshape(8, 12)
        parts = [s.epoch_indices(epoch).reshape(8, 4) for s in shards]
        np.testing.assert_array_equal(np.concatenate(parts, axis=1), order)
        np.testing.assert_array_equal(parts[1], dist.ShardSampler(base, 12, 1, 3).epoch_indices(epoch).reshape(8, 4))
    assert not np.array_equal(shards[0].epoch_indices(0), shards[0].epoch_indices(1))
    seeds = {dist.rank_seed(5, r, 3) for r in range(3)}
    assert len(seeds) == 3 and dist.rank_seed(5, 1, 3) == dist.rank_seed(5, 1, 3) and dist.rank_seed(5, 0, 1) == 5
    with pytest.raises(ValueError, match="global_batch_size.*multiple of the number of ranks"):
        dist.ShardSampler(base, 10, 0, 3)
    with pytest.raises(ValueError, match="'rank' must be <= 2"):
        dist.ShardSampler(base, 12, 3, 3)


def two_replica_threads(nets, images, dlogits):
    """Each net forwards and back-propagates its half of the batch on its own thread; their batch-norm
    reducer sums the two buffers (a two-replica all-reduce, waiting in the reducer with the GIL released:
    the forward itself runs without the GIL and takes it back for the reducer)."""
    barrier, buffers, errors = threading.Barrier(2, timeout=60), [None, None], []

    def reducer(k):
        def reduce(buf):
            buffers[k] = buf
            barrier.wait()
            total = buffers[0] + buffers[1]
            barrier.wait()
            buf[...] = total
        return reduce

    def run(k):
        try:
            half = len(images) // 2
            nets[k].set_bn_reducer(reducer(k))
            nets[k].forward(images[k * half:(k + 1) * half], train=True)
            nets[k].zero_grad()
            nets[k].backward(dlogits[k * half:(k + 1) * half])
        except BaseException as e:  # noqa: BLE001  (reported by the caller)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_sync_bn_over_two_replica_threads_equals_the_whole_batch():
    lade.set_num_threads(1)
    rng = np.random.default_rng(5)
    images = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    probe = rng.standard_normal((6, 7)).astype(np.float32)  # dloss/dlogits of sum(logits * probe)
    whole = lade.ResNet32(7, "lade", seed=4)
    logits = whole.forward(images, train=True)
    whole.zero_grad()
    whole.backward(probe)
    nets = [lade.ResNet32(7, "lade", seed=4) for _ in range(2)]
    two_replica_threads(nets, images, probe)
    scale = np.abs(whole.grads).max()
    np.testing.assert_allclose(nets[0].grads + nets[1].grads, whole.grads, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(nets[0].buffers, nets[1].buffers)
    np.testing.assert_allclose(nets[0].buffers, whole.buffers, rtol=1e-5, atol=1e-6)
    halves = [lade.ResNet32(7, "lade", seed=4) for _ in range(2)]
    together = np.concatenate([halves[k].forward(images[3 * k:3 * k + 3], train=True) for k in (0, 1)])
    assert np.abs(together - logits).max() > 1e-2  # per replica differs: the test can fail


def test_a_bad_bn_reducer_fails_the_step_with_a_clear_error_and_changes_nothing():
    rng = np.random.default_rng(6)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.arange(4, dtype=np.int64)
    net = lade.ResNet32(5, "classic", seed=1)
    opt = lade.SGD(net, lr=0.1)
    before = net.state_dict()

    def unchanged():
        for name, value in net.state_dict().items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
        assert opt.steps == 0 and not opt.velocity.any()

    with pytest.raises(TypeError, match=r"lade.ResNet32.set_bn_reducer: argument 'reducer' must be callable or None, "
                                        r"got int"):
        net.set_bn_reducer(3)

    def broken(buf):
        raise ValueError("link down")
    net.set_bn_reducer(broken)
    with pytest.raises(RuntimeError, match=r"lade.ResNet32.forward: batchnorm2d forward: the statistics reducer "
                                           r"failed: the Python reducer raised ValueError: link down") as info:
        lade.train_step(net, opt, images, labels)
    assert isinstance(info.value.__cause__, ValueError)
    unchanged()
    net.set_bn_reducer(lambda buf: buf * 2)  # returns its result instead of reducing in place
    with pytest.raises(RuntimeError, match="must sum its argument over the replicas in place and return None, got "
                                           "a numpy.ndarray back"):
        lade.train_step(net, opt, images, labels)
    net.set_bn_reducer(lambda buf: buf.fill(0))
    with pytest.raises(ValueError, match="total count of 0 values per channel; expected a whole number >= the 256"):
        lade.train_step(net, opt, images, labels)
    calls = []

    def fails_in_backward(buf):
        calls.append(len(buf))
        if len(calls) > 2 * 31:  # the classic ResNet-32's 31 batch norms, two calls each forward
            raise OSError("link down in the backward")
    net.set_bn_reducer(fails_in_backward)
    with pytest.raises(RuntimeError, match="lade.ResNet32.backward: batchnorm2d backward: the statistics reducer "
                                           "failed: the Python reducer raised OSError"):
        lade.train_step(net, opt, images, labels)
    unchanged()

    def interrupted(buf):
        raise KeyboardInterrupt
    net.set_bn_reducer(interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.forward(images)
    unchanged()
    net.forward(images, train=False)  # eval mode never calls the reducer
    # one replica: the identity reducer gives exactly the per-process batch norm
    net.set_bn_reducer(lambda buf: None)
    synced = lade.train_step(net, opt, images, labels)
    other = lade.ResNet32(5, "classic", seed=1)
    assert lade.train_step(other, lade.SGD(other, lr=0.1), images, labels) == synced
    np.testing.assert_array_equal(net.params, other.params)
    np.testing.assert_array_equal(net.buffers, other.buffers)


def test_sync_bn_costs_three_small_all_reduces_per_bn_layer():
    net = lade.ResNet32(10, "lade", seed=0)
    calls, sent = dist.sync_bn_bytes_per_step(net, 2)
    channels = [v.shape[0] for k, v in net.running_stats().items() if k.endswith("running_mean")]
    assert len(channels) == 33 and calls == 99
    assert sent == 2 * 0.5 * 8 * sum(4 * c + 1 for c in channels)
    seen = []
    net.set_bn_reducer(lambda buf: seen.append(buf.size))
    net.forward(np.zeros((2, 3, 8, 8), np.float32))
    net.backward(np.zeros((2, 10), np.float32))
    assert len(seen) == calls and 8 * sum(seen) == sent / (2 * 0.5)


def test_importing_lade_does_not_import_mpi4py_or_ray():
    code = "import sys, lade, lade.distributed; assert 'mpi4py' not in sys.modules and 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], env=ENV, check=True, timeout=60)


def emulate_two_ranks():
    """One process, the same math as 2 ranks: each half of a global batch forwarded on its own (so batch
    norm uses that half's statistics), the loss over the whole batch, each half's rows back-propagated
    after re-forwarding that half, gradients accumulated, one SGD step."""
    images, labels, net, opt, loss = worker.problem()
    order = worker.base_sampler().epoch_indices(0)
    half = worker.GLOBAL_BATCH // 2
    grads = []
    for step in range(worker.STEPS):
        idx = order[step * worker.GLOBAL_BATCH:(step + 1) * worker.GLOBAL_BATCH]
        parts = [np.ascontiguousarray(images[idx[h * half:(h + 1) * half]]) for h in (0, 1)]
        logits = np.concatenate([net.forward(p, train=True, defer_running_stats=True) for p in parts])
        _, dlogits = loss(logits, np.ascontiguousarray(labels[idx]))
        net.zero_grad()
        for h in (0, 1):
            net.forward(parts[h], train=True, defer_running_stats=True)
            net.backward(np.ascontiguousarray(dlogits[h * half:(h + 1) * half]))
        grads.append(net.grads.copy())
        opt.step()
    return np.stack(grads), net.params.copy(), logits


def test_two_ranks_match_one_process_computing_the_same_math(tmp_path):
    lade.set_num_threads(1)
    out = tmp_path / "ranks.npz"
    res = mpirun([sys.executable, WORKER, "steps", out])
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(out)
    grads, params, logits = emulate_two_ranks()
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-5)  # the last step's global batch
    for step in range(worker.STEPS):
        scale = np.abs(grads[step]).max()
        np.testing.assert_allclose(got["grads"][step], grads[step], rtol=1e-3, atol=1e-5 * scale,
                                   err_msg=f"step {step}")
    np.testing.assert_allclose(got["params"], params, rtol=1e-4, atol=1e-6)
    # and the test can fail: a single process on the whole batch (one set of BN statistics) differs
    images, labels, net, opt, loss = worker.problem()
    idx = worker.base_sampler().epoch_indices(0)[:worker.GLOBAL_BATCH]
    lade.train_step(net, opt, np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx]), loss)
    assert np.abs(net.grads - grads[0]).max() > 1e-3 * np.abs(grads[0]).max()


def test_two_ranks_with_sync_bn_match_one_process_on_the_whole_batch(tmp_path):
    """Synchronised BN: 2 ranks (one thread each) train exactly as one process training the global batch
    with ordinary batch norm, and both ranks hold that process's BN running statistics."""
    lade.set_num_threads(1)
    out = tmp_path / "sync.npz"
    res = mpirun([sys.executable, WORKER, "sync_steps", out])
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(out)
    images, labels, net, opt, loss = worker.problem()
    order = worker.base_sampler().epoch_indices(0)
    grads = []
    for step in range(worker.STEPS):
        idx = order[step * worker.GLOBAL_BATCH:(step + 1) * worker.GLOBAL_BATCH]
        _, logits = lade.train_step(net, opt, np.ascontiguousarray(images[idx]), np.ascontiguousarray(labels[idx]),
                                    loss, reduce_gradients=lambda g: grads.append(g.copy()), return_logits=True)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-4, atol=1e-5)
    for step in range(worker.STEPS):
        scale = np.abs(grads[step]).max()
        np.testing.assert_allclose(got["grads"][step], grads[step], rtol=1e-3, atol=1e-5 * scale,
                                   err_msg=f"step {step}")
    np.testing.assert_allclose(got["params"], net.params, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got["buffers"][0], got["buffers"][1])  # no epoch-end averaging needed
    np.testing.assert_allclose(got["buffers"][0], net.buffers, rtol=1e-4, atol=1e-6)
    # and the test can fail: per-replica BN (the default) differs from the whole batch's
    per_replica, _, _ = emulate_two_ranks()
    assert np.abs(per_replica[0] - grads[0]).max() > 1e-3 * np.abs(grads[0]).max()


def test_a_killed_rank_ends_the_job_instead_of_hanging():
    t0 = time.monotonic()
    res = mpirun([sys.executable, WORKER, "kill"], timeout=90)
    assert res.returncode != 0
    assert time.monotonic() - t0 < 60
    text = res.stdout + res.stderr
    assert "signal 9" in text or "Killed" in text, text[-2000:]


# --------------------------------------------------------------- lade train run.distributed=mpi

def lade_train(tiny_root, out, *extra, ranks=2):  # noqa: F811
    return mpirun([sys.executable, "-m", "lade", "train", "--config", "cifar10_lt_10_lade", "--out", out,
                   "--data-root", tiny_root, "--quiet", "--no-report", *TINY, "optim.epochs=2",
                   "run.distributed=mpi", *extra], np_=ranks)


def test_mpi_training_resumes_exactly_and_refuses_another_number_of_ranks(tiny_root, tmp_path):  # noqa: F811
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    res = lade_train(tiny_root, straight)
    assert res.returncode == 0, res.stderr[-3000:]
    res = lade_train(tiny_root, parted, "--stop-after", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len((parted / "metrics.jsonl").read_text().splitlines()) == 1
    with np.load(parted / "checkpoint.npz") as ck:
        assert int(ck["ranks"]) == 2
    before = {p.name: p.read_bytes() for p in parted.iterdir()}
    res = lade_train(tiny_root, parted, "--resume", ranks=1)
    assert res.returncode == 2
    assert {p.name: p.read_bytes() for p in parted.iterdir()} == before  # refused: nothing changed
    assert "written by a run over 2 MPI ranks" in res.stderr and "mpirun -np 2" in res.stderr, res.stderr[-2000:]
    res = lade_train(tiny_root, parted, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    # the same weights, BN statistics and test logits as the uninterrupted run
    with np.load(straight / "checkpoint.npz") as a, np.load(parted / "checkpoint.npz") as b:
        for name in ("params", "buffers", "velocity", "steps", "epoch"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(np.load(straight / "test_logits.npy"), np.load(parted / "test_logits.npy"))
    losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (straight, parted)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    # rank 0 alone wrote the folder: one session per command that trained, in run.json
    assert len(json.loads((parted / "run.json").read_text())["sessions"]) == 2


def test_mpi_training_with_sync_bn(tiny_root, tmp_path):  # noqa: F811
    res = lade_train(tiny_root, tmp_path / "sync", "run.sync_bn=true", "optim.epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sync_bn: true" in (tmp_path / "sync" / "config.yaml").read_text()
    res = subprocess.run([sys.executable, "-m", "lade", "train", "--config", "cifar10_lt_10_lade", "--out",
                          tmp_path / "single", "--data-root", tiny_root, "--quiet", *TINY, "run.sync_bn=true"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "'run.sync_bn' (true) needs run.distributed=mpi" in res.stderr, res.stderr


def test_an_error_on_one_rank_ends_the_job_with_its_message(tiny_root, tmp_path):  # noqa: F811
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # rank 0 alone checks the run folder and fails; rank 1 waits for it
    t0 = time.monotonic()
    res = lade_train(tiny_root, blocker)
    assert res.returncode == 2, res.stderr[-2000:]
    assert time.monotonic() - t0 < 60
    assert "lade (rank 0 of 2): run folder" in res.stderr and "is not a folder" in res.stderr, res.stderr[-2000:]
