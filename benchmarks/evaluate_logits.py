"""`evaluate --logits` at ImageNet-LT scale: 50,000 test x 1,000 classes (50 images per class),
a 20,000-image held-out set (20 per class), training counts of ImageNet-LT's size (1,280 down to 5
images per class, exponential), synthetic logits from a seeded generator.

Times lade.app.report.evaluate_logits with no prior estimation (estimated_prior='none') and with
the fast estimation protocol ('fast'), --rounds times each, and prints the median of each on the
last lines as `evaluate_logits protocol=P seconds=S`, with the CPU, the thread count and the load
average (other processes on the machine slow it down; say so when quoting a figure).

    python benchmarks/evaluate_logits.py [--rounds 3] [--threads 2] [--profile]

--profile prints the 25 most expensive functions of one 'fast' call (cProfile).
"""
import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
import lade  # noqa: E402
from lade.app import report  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    lade.set_num_threads(args.threads)
    f, y, counts, cf, cy = synthetic()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs, lade threads {args.threads}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"test logits {f.shape}, held-out logits {cf.shape}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        report.evaluate_logits(f, y, counts, cf, cy, method="softmax", estimated_prior="fast")
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return
    for protocol in ("none", "fast"):
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            r = report.evaluate_logits(f, y, counts, cf, cy, method="softmax", estimated_prior=protocol)
            times.append(time.perf_counter() - t0)
        top1 = r["methods"][0]["uniform"]["top1"]
        print(f"  {protocol}: {' '.join(f'{t:.2f}' for t in times)} s (uniform top-1 {top1:.4f})")
        print(f"evaluate_logits protocol={protocol} seconds={statistics.median(times):.2f}")


if __name__ == "__main__":
    main()
