"""Training throughput of the LADE ResNet-32: lade against the same network in PyTorch.

One training step = forward (train mode) + softmax cross-entropy + backward + SGD
(momentum 0.9, weight decay 5e-4), on 32x32 images in batches of 128, with 2
threads for both frameworks. Both run in this one process, in interleaved
rounds after a warmup, alternating which goes first; the figure for each is the
median over rounds. Peak memory is measured in a fresh child process per
framework (VmHWM from /proc, which sees C allocations too).

    python benchmarks/train_step.py [--batch 128] [--threads 2] [--rounds 7] [--steps 3]

The last line is `images_per_s lade=A torch=B ratio=R` with R = A / B.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(REPO_ROOT / "tests"))  # torch_reference: the PyTorch twin of lade's model

NUM_CLASSES = 100
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4


def make_batch(batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch).astype(np.int64)
    return images, labels


class LadeRunner:
    name = "lade"

    def __init__(self, threads):
        import lade

        lade.set_num_threads(threads)
        self.lade = lade
        self.net = lade.ResNet32(num_classes=NUM_CLASSES, variant="lade", seed=0)
        self.opt = lade.SGD(self.net, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(self, images, labels):
        return self.lade.train_step(self.net, self.opt, images, labels)


class TorchRunner:
    name = "torch"

    def __init__(self, threads, state=None):
        import torch
        import torch.nn.functional as F
        from torch_reference import ResNet32, load_numpy_state

        torch.set_num_threads(threads)
        self.torch, self.F = torch, F
        self.model = ResNet32(NUM_CLASSES, "lade")
        if state is not None:
            load_numpy_state(self.model, state)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.cache = {}

    def step(self, images, labels):
        key = id(images)
        if key not in self.cache:  # from_numpy is zero-copy; done once per batch
            self.cache[key] = (self.torch.from_numpy(images), self.torch.from_numpy(labels))
        x, y = self.cache[key]
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()


def timed_steps(runner, images, labels, steps):
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(images, labels)
    return time.perf_counter() - start


def read_status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB -> MiB
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(framework, batch, threads, steps):
    """Runs in a fresh process: RSS once imports and data are in place, then
    the high-water mark after a few training steps."""
    images, labels = make_batch(batch)
    if framework == "lade":
        import lade  # noqa: F401
    else:
        import torch  # noqa: F401
        import torch_reference  # noqa: F401
    baseline = read_status("VmRSS")
    runner = LadeRunner(threads) if framework == "lade" else TorchRunner(threads)
    for _ in range(steps):
        runner.step(images, labels)
    print(f"{baseline:.1f} {read_status('VmHWM'):.1f}")


def peak_memory(framework, batch, threads):
    out = subprocess.run([sys.executable, __file__, "--memory-child", framework, "--batch", str(batch),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    baseline, peak = (float(v) for v in out.stdout.split())
    return baseline, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round and framework")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per framework first")
    parser.add_argument("--memory-child", choices=["lade", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.threads, steps=3)
        return

    images, labels = make_batch(args.batch)
    lade_runner = LadeRunner(args.threads)
    torch_runner = TorchRunner(args.threads, state=lade_runner.net.state_dict())  # same starting weights
    runners = [lade_runner, torch_runner]
    print(f"LADE ResNet-32 (spec §4), batch {args.batch} of 32x32, {args.threads} threads, "
          f"SGD momentum {MOMENTUM} wd {WEIGHT_DECAY}; torch {torch_runner.torch.__version__}")
    for runner in runners:
        for _ in range(args.warmup):
            runner.step(images, labels)

    lade_runner.net.profile_reset()
    rates = {r.name: [] for r in runners}
    lade_seconds = 0.0
    for round_index in range(args.rounds):
        order = runners if round_index % 2 == 0 else runners[::-1]
        for runner in order:
            seconds = timed_steps(runner, images, labels, args.steps)
            rates[runner.name].append(args.steps * args.batch / seconds)
            if runner is lade_runner:
                lade_seconds += seconds
        print(f"round {round_index + 1}: " + "  ".join(f"{n} {rates[n][-1]:7.1f} img/s" for n in rates))
    measured_steps = args.rounds * args.steps
    median = {name: statistics.median(values) for name, values in rates.items()}

    profile = lade_runner.net.profile()
    step_time = lade_seconds / measured_steps  # the mean, like the profile's totals
    print(f"\nlade time per step by layer kind (mean over {measured_steps} steps of {step_time * 1e3:.1f} ms):")
    total = 0.0
    for kind, seconds in sorted(profile.items(), key=lambda kv: -kv[1]):
        per_step = seconds / measured_steps
        total += per_step
        print(f"  {kind:<28} {per_step * 1e3:8.2f} ms  {100 * per_step / step_time:5.1f} %")
    print(f"  {'other':<28} {(step_time - total) * 1e3:8.2f} ms  {100 * (step_time - total) / step_time:5.1f} %"
          "  (loss, SGD update, Python, unprofiled)")

    print("\npeak memory (fresh process each; RSS after imports -> high-water mark after 3 steps):")
    for name in ("lade", "torch"):
        baseline, peak = peak_memory(name, args.batch, args.threads)
        print(f"  {name:<6} {baseline:7.1f} MiB -> {peak:7.1f} MiB  (+{peak - baseline:.1f} MiB for the model and "
              "its training)")

    print("\nimages/s per round: " + "; ".join(f"{n}: " + ", ".join(f"{v:.0f}" for v in vals)
                                           for n, vals in rates.items()))
    ratio = median["lade"] / median["torch"]
    print(f"images_per_s lade={median['lade']:.1f} torch={median['torch']:.1f} ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
