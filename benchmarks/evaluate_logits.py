"""`evaluate --logits` at ImageNet-LT scale: 50,000 test x 1,000 classes (50 images per class),
a 20,000-image held-out set (20 per class), training counts of ImageNet-LT's size (1,280 down to 5
images per class, exponential), synthetic logits from a seeded generator.

Times lade.app.evaluation.evaluate_logits with no prior estimation (estimated_prior='none') and with
the fast estimation protocol ('fast'), --rounds times each, and prints the median of each as
`evaluate_logits protocol=P seconds=S`, with the CPU, the thread count and the load average (other
processes on the machine slow it down; say so when quoting a figure).

    python benchmarks/evaluate_logits.py [--rounds 3] [--threads 2] [--profile] [--baseline DIR]

--baseline DIR: also time the lade of another built source checkout (e.g. an older commit) in a
subprocess, rounds interleaved with this one's, and print `ratio=baseline/this` per protocol.
--profile prints the 25 most expensive functions of one 'fast' call (cProfile).
"""
import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# --tree DIR (used by --baseline): import lade from that checkout instead of this one
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv else str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _TREE)
import lade  # noqa: E402
from lade.app import evaluation  # noqa: E402

CLASSES, TEST_PER_CLASS, CALIB_PER_CLASS = 1000, 50, 20


def synthetic(seed=0):
    """Logits of a model that is right about 45 % of the time and biased towards head classes."""
    rng = np.random.default_rng(seed)
    counts = np.round(1280 * (5 / 1280) ** (np.arange(CLASSES) / (CLASSES - 1))).astype(np.int64)
    bias = np.log(counts / counts.sum()).astype(np.float32)

    def logits(per_class):
        y = np.repeat(np.arange(CLASSES), per_class)
        z = rng.standard_normal((y.size, CLASSES), dtype=np.float32) + 0.5 * bias
        z[np.arange(y.size), y] += 3.0
        return z, y

    (f, y), (cf, cy) = logits(TEST_PER_CLASS), logits(CALIB_PER_CLASS)
    return f, y, counts, cf, cy


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def time_protocol(data, protocol):
    """(wall seconds, CPU seconds of this process over all its threads, uniform top-1)"""
    f, y, counts, cf, cy = data
    t0, c0 = time.perf_counter(), time.process_time()
    r = evaluation.evaluate_logits(f, y, counts, cf, cy, method="softmax", estimated_prior=protocol)
    return time.perf_counter() - t0, time.process_time() - c0, r["methods"][0]["uniform"]["top1"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--baseline", help="another built lade checkout to time in the same run")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # time one protocol once and print the seconds
    args = ap.parse_args()
    lade.set_num_threads(args.threads)
    data = synthetic()
    if args.one:
        print(" ".join(f"{v:.6f}" for v in time_protocol(data, args.one)))
        return
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, lade threads {args.threads}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"test logits {data[0].shape}, held-out logits {data[3].shape}; this lade: {lade.__file__}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        time_protocol(data, "fast")
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return
    for protocol in ("none", "fast"):
        runs, base = [], []  # (wall, cpu) per round
        for _ in range(args.rounds):
            *seconds, top1 = time_protocol(data, protocol)
            runs.append(seconds)
            if args.baseline:
                out = subprocess.run([sys.executable, __file__, "--tree", args.baseline, "--one", protocol,
                                      "--threads", str(args.threads)], capture_output=True, text=True, check=True)
                *b_seconds, b_top1 = map(float, out.stdout.split()[-3:])
                if abs(b_top1 - top1) > 1e-6:
                    raise SystemExit(f"the baseline's uniform top-1 {b_top1} differs from this lade's {top1}")
                base.append(b_seconds)
        wall, cpu = (statistics.median(r[k] for r in runs) for k in (0, 1))
        print(f"  {protocol}: wall {' '.join(f'{r[0]:.2f}' for r in runs)} s, CPU {' '.join(f'{r[1]:.2f}' for r in runs)} s "
              f"(uniform top-1 {top1:.4f})")
        line = f"evaluate_logits protocol={protocol} seconds={wall:.2f} cpu_seconds={cpu:.2f}"
        if base:
            b_wall, b_cpu = (statistics.median(r[k] for r in base) for k in (0, 1))
            print(f"  {protocol} baseline: wall {' '.join(f'{r[0]:.2f}' for r in base)} s, "
                  f"CPU {' '.join(f'{r[1]:.2f}' for r in base)} s")
            line += (f" baseline_seconds={b_wall:.2f} baseline_cpu_seconds={b_cpu:.2f} ratio={b_wall / wall:.2f} "
                     f"cpu_ratio={b_cpu / cpu:.2f}")
        print(line)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
