"""Data-parallel training over MPI on this machine, and a projection to N machines.

Measures one training step of the LADE ResNet-32 (32x32 images, 100 classes, the LADE loss; forward,
loss, backward, SGD) at a global batch of B images, two ways on the same cores:

- 1 process x 2 threads (lade.train_step, the whole batch);
- 2 MPI ranks x 1 thread (`mpirun -np 2`): each rank B/2 images, the loss over the global batch
  (lade.distributed.GlobalBatchLoss: logits and labels gathered), the gradient summed in place
  (lade.distributed.GradientSum: one Allreduce on the flat float32 buffer);
- the same with synchronised batch norm (run.sync_bn; lade.distributed.BatchNormSum: three small
  Allreduce calls per BN layer and step, two forward and one backward). The time inside those calls
  is measured per step; it includes waiting for the other rank to reach the same layer.

Rounds alternate the three; each figure is the median over rounds. Then the bytes each rank moves per
step and a projection for N machines (each like this one, running 1 process x 2 threads) on 10 and
100 Gb/s links, strong scaling at a fixed global batch B (the paper's 256):

    t_step(N)   = (B / N) * t_img + t_ring(N) + t_gather(N)
    t_ring(N)   = 2 (N - 1) / N * S / bw + 2 (N - 1) * alpha        (ring all-reduce of S = 4 * params bytes)
    t_gather(N) = (N - 1) / N * B * (4 C + 8) / bw + 3 (N - 1) * alpha   (three ring all-gathers)
    speedup(N)  = B * t_img / t_step(N)
    t_syncbn(N) = 2 (N - 1) / N * S_bn / bw + 3 L * 2 (N - 1) * alpha  (sync BN: 3 L ring all-reduces of
                                                                     S_bn bytes in all, L BN layers)

t_img is measured (1 / images/s of one process x 2 threads); alpha, the per-message latency, is an
assumption (25 us for 10 Gb/s TCP, 3 us for 100 Gb/s RDMA). The communication does not overlap the
backward pass in lade, so the times add. Scaling stops paying where the communication takes as long
as the compute (efficiency speedup / N = 1/2); per-replica batch norm also needs enough rows per rank
(B / N >= 16 here).

    python benchmarks/distributed.py [--batch 256] [--steps 6] [--rounds 2]

The last line is `images_per_s one_process=A two_ranks=B ratio=R two_ranks_sync_bn=C`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CLASSES = 100
MIN_ROWS_PER_RANK = 16
LINKS = ((10, 25e-6), (100, 3e-6))  # (Gb/s, assumed per-message latency alpha in seconds)


def setup(threads, batch, seed):
    import lade
    lade.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch).astype(np.int64)
    labels[:min(batch, CLASSES)] = np.arange(min(batch, CLASSES))
    prior = lade.priors.prior_from_counts(np.maximum(lade.priors.class_counts(labels, CLASSES), 1))
    net = lade.ResNet32(CLASSES, "lade", seed=0)
    opt = lade.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss = lade.losses.LADELoss(prior, alpha=0.1, remine_lambda=0.01)
    return lade, images, labels, net, opt, loss


def role_single(args):
    lade, images, labels, net, opt, loss = setup(2, args.batch, 0)
    for _ in range(2):  # warm-up
        lade.train_step(net, opt, images, labels, loss)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        lade.train_step(net, opt, images, labels, loss)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.median(times), "params": int(net.num_params)}))


class TimedReducer:
    """BatchNormSum, timing its calls."""

    def __init__(self, reducer):
        self.reducer, self.seconds, self.calls = reducer, 0.0, 0

    def __call__(self, buf):
        t0 = time.perf_counter()
        self.reducer(buf)
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def role_rank(args):
    import lade.distributed as dist
    comm = dist.world()
    local = args.batch // comm.size
    lade, images, labels, net, opt, base_loss = setup(1, local, comm.rank + 1)
    loss = dist.GlobalBatchLoss(base_loss, comm)
    reduce = dist.GradientSum(comm)
    sync = TimedReducer(dist.BatchNormSum(comm)) if args.sync_bn else None
    net.set_bn_reducer(sync)
    for _ in range(2):  # warm-up
        lade.train_step(net, opt, images, labels, loss, reduce_gradients=reduce)
    comm.Barrier()
    if sync:
        sync.seconds, sync.calls = 0.0, 0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        lade.train_step(net, opt, images, labels, loss, reduce_gradients=reduce)
        times.append(time.perf_counter() - t0)
    sync_s = comm.allreduce(sync.seconds / args.steps, op=dist._mpi().MAX) if sync else 0.0
    sync_calls = sync.calls // args.steps if sync else 0
    net.set_bn_reducer(None)
    # the communication alone, each call started together on both ranks (a barrier first), so that
    # waiting for the slower rank is not counted
    grad = np.empty((local, CLASSES), np.float32)
    logits = net.forward(images, train=True)
    timers = {"allreduce": [], "loss": [], "local_loss": []}
    for _ in range(args.steps):
        for name, call in (("allreduce", lambda: reduce(net.grads)), ("loss", lambda: loss(logits, labels, grad)),
                           ("local_loss", lambda: base_loss(logits, labels, grad))):
            comm.Barrier()
            t0 = time.perf_counter()
            call()
            timers[name].append(time.perf_counter() - t0)
    step = comm.allreduce(statistics.median(times), op=dist._mpi().MAX)
    if comm.rank == 0:
        print(json.dumps({"step_s": step, "params": int(net.num_params), "sync_bn_s": sync_s,
                          "sync_bn_calls": sync_calls, "sync_bn_bytes": dist.sync_bn_bytes_per_step(net, comm.size)[1],
                          **{f"{k}_s": statistics.median(v) for k, v in timers.items()}}))


def run_child(cmd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"benchmark child failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def projection(batch, t_img, params, bn_calls, bn_bytes_n2):
    size = 4 * params
    bn_size = bn_bytes_n2  # at N = 2, 2 (N - 1) / N = 1: the bytes of the BN sums themselves
    rows = []
    for gbps, alpha in LINKS:
        bw = gbps * 1e9 / 8
        table, half, best = [], None, (0, 0.0)
        for n in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            if n > batch:
                break
            compute = batch / n * t_img
            ring = 2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha
            gather = (n - 1) / n * batch * (4 * CLASSES + 8) / bw + 3 * (n - 1) * alpha
            speedup = batch * t_img / (compute + ring + gather)
            table.append((n, compute, ring + gather, speedup))
        # the N where communication equals compute (efficiency 1/2), on the continuous model
        for n in range(1, batch + 1):
            compute = batch / n * t_img
            comm = (2 * (n - 1) / n * size + (n - 1) / n * batch * (4 * CLASSES + 8)) / bw + 5 * (n - 1) * alpha
            if comm >= compute and half is None:
                half = n
            speedup = batch * t_img / (compute + comm)
            if speedup > best[1]:
                best = (n, speedup)
        syncbn = [(n, 2 * (n - 1) / n * bn_size / bw + bn_calls * 2 * (n - 1) * alpha, batch / n * t_img)
                  for n in (2, 4, 8, 16)]
        rows.append((gbps, alpha, table, half, best, syncbn))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--steps", type=int, default=6, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--role", choices=("single", "rank"), help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "single":
        return role_single(args)
    if args.role == "rank":
        return role_rank(args)

    me = [sys.executable, os.path.abspath(__file__), "--batch", str(args.batch), "--steps", str(args.steps)]
    single, ranks, synced = [], [], []
    mpirun = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none"]
    for _ in range(args.rounds):
        single.append(run_child(me + ["--role", "single"]))
        ranks.append(run_child(mpirun + me + ["--role", "rank"]))
        synced.append(run_child(mpirun + me + ["--role", "rank", "--sync-bn"]))
    t1 = statistics.median(s["step_s"] for s in single)
    t2 = statistics.median(s["step_s"] for s in ranks)
    t3 = statistics.median(s["step_s"] for s in synced)
    sync_s = statistics.median(s["sync_bn_s"] for s in synced)
    bn_calls, bn_bytes = synced[0]["sync_bn_calls"], synced[0]["sync_bn_bytes"]
    allreduce = statistics.median(s["allreduce_s"] for s in ranks)
    loss_s = statistics.median(s["loss_s"] for s in ranks)
    local_loss = statistics.median(s["local_loss_s"] for s in ranks)
    params = single[0]["params"]
    import lade
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; lade kernel variant {lade.cpu_info().get('variant', '?')}")
    print(f"LADE ResNet-32, {params} parameters, 100 classes, global batch {args.batch}, LADE loss; "
          f"median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'':28s}{'images/s':>10s}{'step s':>9s}{'all-reduce ms':>15s}{'gather+loss ms':>16s}")
    print(f"{'1 process x 2 threads':28s}{args.batch / t1:10.1f}{t1:9.3f}{'-':>15s}{'-':>16s}")
    print(f"{'2 MPI ranks x 1 thread':28s}{args.batch / t2:10.1f}{t2:9.3f}{1e3 * allreduce:15.2f}{1e3 * loss_s:16.2f}")
    print(f"{'  the same, sync BN':28s}{args.batch / t3:10.1f}{t3:9.3f}")
    print(f"sync BN: {bn_calls} all-reduces per step and rank moving {bn_bytes / 1e3:.1f} kB in all (N=2), "
          f"{1e3 * sync_s:.1f} ms per step inside them including the wait for the other rank "
          f"({100 * sync_s / t3:.1f} % of the step); step time x{t3 / t2:.3f} against per-replica BN")
    grad_bytes = 4 * params
    ring = 2 * (2 - 1) / 2 * grad_bytes
    gathered = (2 - 1) / 2 * args.batch * (4 * CLASSES + 8)
    print(f"bytes per step and rank (N=2): gradient all-reduce 2(N-1)/N x 4 x {params} = {ring / 1e6:.3f} MB, "
          f"logits+labels gather (N-1)/N x B x (4C+8) = {gathered / 1e6:.3f} MB "
          f"({100 * gathered / ring:.1f} % on top)")
    print(f"the global-batch loss: {1e3 * loss_s:.2f} ms per step (gather + loss on all {args.batch} rows) against "
          f"{1e3 * local_loss:.2f} ms for the loss on the rank's own {args.batch // 2} rows "
          f"({100 * (loss_s - local_loss) / t2:.2f} % of the step)")
    t_img = t1 / args.batch
    print(f"\nprojection: N machines like this one (1 process x 2 threads, t_img = {1e3 * t_img:.2f} ms), "
          f"global batch {args.batch}")
    for gbps, alpha, table, half, best, syncbn in projection(args.batch, t_img, params, bn_calls, bn_bytes):
        print(f"  {gbps} Gb/s, alpha {1e6 * alpha:.0f} us:  " + "  ".join(
            f"N={n}: x{s:.1f}" + (f" (comm {100 * c / (c + comp):.0f}%)" if n > 1 else "")
            for n, comp, c, s in table))
        print(f"    communication = compute (efficiency 1/2) at N = {half or f'> {args.batch}'}; "
              f"throughput peaks at N = {best[0]} "
              f"(x{best[1]:.1f}); per-replica BN at >= {MIN_ROWS_PER_RANK} rows per rank caps N at "
              f"{args.batch // MIN_ROWS_PER_RANK}")
        print("    sync BN adds " + ", ".join(f"N={n}: {1e3 * t:.1f} ms ({100 * t / comp:.1f}% of the compute)"
                                           for n, t, comp in syncbn) + " (latency-bound)")
    print(f"images_per_s one_process={args.batch / t1:.1f} two_ranks={args.batch / t2:.1f} ratio={t1 / t2:.3f} "
          f"two_ranks_sync_bn={args.batch / t3:.1f}")


if __name__ == "__main__":
    main()
