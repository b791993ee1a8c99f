"""Training throughput of the LADE ResNet-32: lade against the same network in PyTorch.

One training step = forward (train mode) + softmax cross-entropy + backward + SGD
(momentum 0.9, weight decay 5e-4), on 32x32 images, with 2 threads for both
frameworks. Printed, in order:
- the CPU, lade's kernel variant, and the machine's FMA peak (GFLOP/s on the
  benchmark's threads, measured by benchmarks/fma_peak.c at the widest vector
  width the CPU has, best of 5);
- training at batch 128 and 256 and eval throughput (lade.predict against
  torch eval under no_grad), lade and PyTorch interleaved in the same process
  in rounds that alternate the order; each figure is the median over rounds.
  PyTorch runs float32 in both of its layouts, NCHW and channels_last, and
  each row compares lade with the faster of the two (what a user would pick);
  where the CPU has bfloat16 instructions (AVX512-BF16 or AMX), PyTorch also
  trains under autocast(bfloat16) in channels_last;
- lade's time per layer kind and per convolution with its achieved GFLOP/s;
- peak memory of each framework in a fresh child process;
- an AVX2-only like-for-like row from a child process: lade with LADE_ISA=avx2,
  PyTorch with ONEDNN_MAX_CPU_ISA=AVX2.

    python benchmarks/train_step.py [--threads 2] [--rounds 7] [--steps 3] [--busy N]

--busy N runs N processes that spin at nice 19 beside the measurement, as on a
machine shared with background jobs (builds, a data loader, another user).

The last line is `images_per_s lade=A torch=B ratio=R peak_fraction=F`, at batch
128 with lade's default (widest) variant against PyTorch's faster float32 layout:
R = A / B and F = A * 0.4416e9 / peak, 0.4416 GFLOP being one training step of
this network per image. On a CPU with bfloat16 the line before it is
`bf16 lade=A torch=B ratio=R lade_bf16_over_float32=S`, at batch 128: lade with
precision="bf16" (its avx512_bf16 kernels) against PyTorch under autocast(bfloat16)
in channels_last, and S = A / lade's float32 figure; where lade has no bfloat16
kernels (AMX only) the line says so.
"""
import argparse
import atexit
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(REPO_ROOT / "tests"))  # torch_reference: the PyTorch twin of lade's model

NUM_CLASSES = 100
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
STEP_FLOP_PER_IMAGE = 0.4416e9  # forward + backward of the convolutions and the head, per image
EVAL_IMAGES = 1024


def make_batch(batch, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch).astype(np.int64)
    return images, labels


class LadeRunner:
    """lade's training step in float32 ("lade") or with precision="bf16" ("lade_bf16")."""

    def __init__(self, threads, precision="float32"):
        import lade

        lade.set_num_threads(threads)
        self.lade = lade
        self.name = "lade" if precision == "float32" else f"lade_{precision}"
        self.net = lade.ResNet32(num_classes=NUM_CLASSES, variant="lade", seed=0, precision=precision)
        self.opt = lade.SGD(self.net, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def step(self, images, labels):
        return self.lade.train_step(self.net, self.opt, images, labels)

    def predict(self, images, batch):
        return self.lade.predict(self.net, images, batch_size=batch)


class TorchRunner:
    """The same network in PyTorch: float32 NCHW ("torch"), float32 channels_last ("torch_cl"), or
    bfloat16 autocast in channels_last ("torch_bf16", PyTorch's mixed precision on a CPU)."""

    def __init__(self, threads, state=None, channels_last=False, bf16=False):
        import contextlib

        import torch
        import torch.nn.functional as F
        from torch_reference import ResNet32, load_numpy_state

        torch.set_num_threads(threads)
        self.torch, self.F = torch, F
        self.name = "torch_bf16" if bf16 else "torch_cl" if channels_last else "torch"
        self.memory_format = torch.channels_last if channels_last or bf16 else torch.contiguous_format
        self.autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext)
        self.model = ResNet32(NUM_CLASSES, "lade")
        if state is not None:
            load_numpy_state(self.model, state)
        self.model = self.model.to(memory_format=self.memory_format)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.cache = {}

    def tensors(self, images, labels=None):
        key = id(images)
        if key not in self.cache:  # converted once per batch (from_numpy alone is zero-copy)
            x = self.torch.from_numpy(images).contiguous(memory_format=self.memory_format)
            self.cache[key] = (x, None if labels is None else self.torch.from_numpy(labels))
        return self.cache[key]

    def step(self, images, labels):
        x, y = self.tensors(images, labels)
        self.opt.zero_grad()
        with self.autocast():
            loss = self.F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def predict(self, images, batch):
        x, _ = self.tensors(images)
        self.model.eval()
        with self.torch.no_grad(), self.autocast():
            out = [self.model(x[i:i + batch]) for i in range(0, len(x), batch)]
        self.model.train()
        return out


def cpu_flags():
    """The CPU's feature flags as the kernel lists them (avx512_bf16, amx_bf16, ...)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


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


def fma_peak(supported, threads, repeats=5):
    """GFLOP/s of benchmarks/fma_peak.c at the widest vector width the CPU has
    (best of `repeats`: the machine is shared), and that width in floats."""
    if "avx512" in supported:
        width, flags = 16, ["-mavx512f", "-mfma"]
    elif "avx2" in supported:
        width, flags = 8, ["-mavx2", "-mfma"]
    else:
        width, flags = 4, []  # SSE2 baseline: separate multiply and add
    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(tmp) / "fma_peak")
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-ffp-contract=fast", f"-DWIDTH={width}", *flags,
                        str(REPO_ROOT / "benchmarks" / "fma_peak.c"), "-o", exe, "-lpthread"], check=True)
        best = 0.0
        for _ in range(repeats):
            out = subprocess.run([exe, str(threads), "50000000"], capture_output=True, text=True, check=True)
            best = max(best, float(out.stdout.split()[0]))
    return best, width


def interleaved(tasks, rounds, report):
    """tasks: {label: (function, images per call)}; each round calls every task
    once, in an order that alternates between rounds. Returns the images/s per
    round for every label."""
    rates = {label: [] for label in tasks}
    labels = list(tasks)
    for round_index in range(rounds):
        order = labels if round_index % 2 == 0 else labels[::-1]
        for label in order:
            fn, images = tasks[label]
            start = time.perf_counter()
            fn()
            rates[label].append(images / (time.perf_counter() - start))
        if report:
            print(f"round {round_index + 1}: " + "  ".join(f"{k} {rates[k][-1]:6.1f}" for k in labels))
    return rates


def training_tasks(runners, batch, steps):
    images, labels = make_batch(batch)

    def repeat(runner):
        return lambda: [runner.step(images, labels) for _ in range(steps)]

    for runner in runners:  # warm up this batch size (arena, oneDNN primitives)
        runner.step(images, labels)
    return {f"{r.name}@{batch}": (repeat(r), steps * batch) for r in runners}


def compare(runners, batches, rounds, steps, report, bf16_runners=()):
    """Medians of images/s: training at each batch size and eval (predict in batches of 256), every
    runner interleaved; bf16_runners train at batch 128 only."""
    tasks = {}
    for batch in batches:
        tasks.update(training_tasks(runners, batch, steps))
    if bf16_runners:
        tasks.update(training_tasks(list(bf16_runners), 128, steps))
    eval_images, _ = make_batch(EVAL_IMAGES, seed=1)
    for runner in runners:
        runner.predict(eval_images, 256)
        tasks[f"{runner.name}-eval"] = ((lambda r=runner: r.predict(eval_images, 256)), EVAL_IMAGES)
    rates = interleaved(tasks, rounds, report)
    return {label: statistics.median(values) for label, values in rates.items()}, rates


def best_torch(median, key):
    """PyTorch's faster float32 layout for a row: (images/s, layout name)."""
    return max((median["torch" + key], "NCHW"), (median["torch_cl" + key], "channels_last"))


def avx2_child(args):
    """The like-for-like AVX2 row, in a process started with LADE_ISA=avx2 and
    ONEDNN_MAX_CPU_ISA=AVX2 (both must be set before the libraries load)."""
    lade_runner = LadeRunner(args.threads)
    state = lade_runner.net.state_dict()
    runners = [lade_runner] + [TorchRunner(args.threads, state, channels_last=cl) for cl in (False, True)]
    median, _ = compare(runners, [128], args.rounds, args.steps, report=False)
    print(f"{lade_runner.lade.cpu_info()['variant']} {median['lade@128']:.1f} {best_torch(median, '@128')[0]:.1f} "
          f"{median['lade-eval']:.1f} {best_torch(median, '-eval')[0]:.1f}")


def print_profile(net, steps, batch):
    """Time per layer kind and per convolution, from `steps` training steps."""
    profile, convs = net.profile(), net.conv_profile()
    total = sum(profile.values())
    print(f"\nlade time per step by layer kind (batch {batch}, mean over {steps} steps; "
          f"{total / steps * 1e3:.1f} ms profiled):")
    for kind, seconds in sorted(profile.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<28} {seconds / steps * 1e3:8.2f} ms  {100 * seconds / total:5.1f} %")
    print(f"\nlade per convolution (batch {batch}; GFLOP/s achieved; backward = input + weight gradient):")
    print(f"  {'layer':<24} {'cin':>4} {'cout':>4} {'in':>5} {'s':>2} {'fwd ms':>8} {'GFLOP/s':>8} {'bwd ms':>8} "
          f"{'GFLOP/s':>8}")
    flop = 0.0
    for c in convs:
        fwd, bwd = c["forward_seconds"] / steps, c["backward_seconds"] / steps
        flop += (c["forward_flops"] + c["backward_flops"]) * batch
        print(f"  {c['name'].removesuffix('.weight'):<24} {c['cin']:>4} {c['cout']:>4} {c['in_h']:>5} {c['stride']:>2} "
              f"{fwd * 1e3:8.2f} {c['forward_flops'] * batch / fwd / 1e9:8.1f} {bwd * 1e3:8.2f} "
              f"{c['backward_flops'] * batch / bwd / 1e9:8.1f}")
    conv_seconds = sum(c["forward_seconds"] + c["backward_seconds"] for c in convs) / steps
    print(f"  {'all convolutions':<43} {conv_seconds * 1e3:8.2f} ms for {flop / batch / 1e9:.4f} GFLOP per image: "
          f"{flop / conv_seconds / 1e9:.1f} GFLOP/s")


def start_busy(n):
    """n processes spinning at nice 19 for the whole run: a machine shared with background jobs."""
    code = "import os\nos.nice(19)\nwhile True:\n    pass"
    busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    atexit.register(lambda: [p.kill() for p in busy])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)  # memory child only
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per round, framework and batch size")
    parser.add_argument("--no-avx2-row", action="store_true", help="skip the AVX2-only child process")
    parser.add_argument("--busy", type=int, default=0, help="nice-19 busy-loop processes to run beside the measurement")
    parser.add_argument("--memory-child", choices=["lade", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--avx2-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.threads, steps=3)
        return
    if args.avx2_child:
        avx2_child(args)
        return

    import lade

    start_busy(args.busy)
    info = lade.cpu_info()
    peak, width = fma_peak(info["supported"].split(), args.threads)
    lade_runner = LadeRunner(args.threads)
    state = lade_runner.net.state_dict()  # the same starting weights everywhere
    runners = [lade_runner] + [TorchRunner(args.threads, state, channels_last=cl) for cl in (False, True)]
    has_bf16 = any(f in cpu_flags() for f in ("avx512_bf16", "amx_bf16"))
    lade_bf16 = "avx512_bf16" in info["supported"].split()
    bf16_runners = []
    if has_bf16:
        bf16_runners.append(TorchRunner(args.threads, state, bf16=True))
        if lade_bf16:
            bf16_runners.append(LadeRunner(args.threads, precision="bf16"))
    print(f"CPU: {info['model']} ({info['features']}); lade kernel variant {info['variant']} "
          f"(supported: {info['supported']}); torch {runners[1].torch.__version__}"
          + (f"; beside {args.busy} nice-19 busy loop(s)" if args.busy else ""))
    print(f"FMA peak: {peak:.1f} GFLOP/s ({width}-float vectors, {args.threads} threads, best of 5) "
          f"= {peak * 1e9 / STEP_FLOP_PER_IMAGE:.0f} training images/s at {STEP_FLOP_PER_IMAGE / 1e9} GFLOP each")
    print(f"LADE ResNet-32 (spec §4), 32x32 images, {args.threads} threads, SGD momentum {MOMENTUM} wd "
          f"{WEIGHT_DECAY}; images/s per round (training at batch 128 and 256; eval = predict in batches of 256):")
    median, rates = compare(runners, [128, 256], args.rounds, args.steps, report=True, bf16_runners=bf16_runners)

    images, labels = make_batch(128)
    for runner in [lade_runner] + [r for r in bf16_runners if isinstance(r, LadeRunner)]:
        runner.net.profile_reset()
        for _ in range(args.steps):
            runner.step(images, labels)
        print(f"\n== {runner.name} (precision {runner.net.precision})")
        print_profile(runner.net, args.steps, 128)

    print("\npeak memory at batch 128 (fresh process each; RSS after imports -> high-water mark after 3 steps):")
    for name in ("lade", "torch"):
        baseline, high = peak_memory(name, 128, args.threads)
        print(f"  {name:<6} {baseline:7.1f} MiB -> {high:7.1f} MiB  (+{high - baseline:.1f} MiB for the model and "
              "its training)")

    print(f"\nmedians over {args.rounds} rounds, images/s (torch: the faster of its float32 layouts):")
    for what, key in [("train batch 128", "@128"), ("train batch 256", "@256"), ("eval", "-eval")]:
        a, (b, layout) = median["lade" + key], best_torch(median, key)
        print(f"  {what:<16} lade {a:7.1f}  torch {b:7.1f} ({layout}; NCHW {median['torch' + key]:.1f}, "
              f"channels_last {median['torch_cl' + key]:.1f})  ratio {a / b:.3f}")
    if not args.no_avx2_row:
        env = dict(os.environ, LADE_ISA="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
        out = subprocess.run([sys.executable, __file__, "--avx2-child", "--threads", str(args.threads), "--rounds",
                              str(args.rounds), "--steps", str(args.steps)], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"  AVX2-only row: not measured ({out.stderr.strip().splitlines()[-1]})")
        else:
            variant, a, b, ea, eb = out.stdout.split()
            a, b, ea, eb = float(a), float(b), float(ea), float(eb)
            print(f"  AVX2-only (lade {variant}, torch ONEDNN_MAX_CPU_ISA=AVX2, child process): train batch 128 "
                  f"lade {a:.1f} torch {b:.1f} ratio {a / b:.3f}; eval lade {ea:.1f} torch {eb:.1f} ratio {ea / eb:.3f}")
    a, b = median["lade@128"], best_torch(median, "@128")[0]
    if has_bf16 and lade_bf16:
        c, d = median["torch_bf16@128"], median["lade_bf16@128"]
        print(f"bf16 lade={d:.1f} torch={c:.1f} ratio={d / c:.3f} lade_bf16_over_float32={d / a:.3f} "
              f"(lade: precision bf16; torch: autocast bfloat16, channels_last)")
    elif has_bf16:
        c = median["torch_bf16@128"]
        print(f"bf16 lade=none torch={c:.1f} (lade's bfloat16 kernels need AVX512-BF16; this CPU has AMX only)")
    else:
        print("bf16: not measured (the CPU has neither AVX512-BF16 nor AMX)")
    print(f"images_per_s lade={a:.1f} torch={b:.1f} ratio={a / b:.3f} "
          f"peak_fraction={a * STEP_FLOP_PER_IMAGE / (peak * 1e9):.3f}")


if __name__ == "__main__":
    main()
