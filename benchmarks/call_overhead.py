"""Time of a tiny lade._C call (the binding layer's overhead): softmax and softmax_ce of 1 x 10
logits, for one or more built trees loaded side by side in one process and timed alternately.

    python3 benchmarks/call_overhead.py TREE [TREE ...]    (a TREE holds lade/_C*.so, built in place)

Prints the median ns per call of each tree for each call."""
import glob
import importlib.util
import statistics
import sys
import time

import numpy as np


def load(tree):
    path = glob.glob(f"{tree}/lade/_C*.so")[0]
    spec = importlib.util.spec_from_file_location("lade._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_ns(fn, calls=20000):
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


def main(trees, rounds=25):
    modules = [load(t) for t in trees]
    logits, labels = np.random.default_rng(0).standard_normal((1, 10)).astype(np.float32), np.zeros(1, np.int64)
    calls = {"softmax(logits)": lambda m: m.softmax(logits),
             "softmax_ce(logits, labels)": lambda m: m.softmax_ce(logits, labels)}
    for name, call in calls.items():
        times = [[] for _ in modules]
        for _ in range(rounds):
            for i, m in enumerate(modules):
                times[i].append(per_call_ns(lambda: call(m)))
        for tree, t in zip(trees, times):
            print(f"{name:28s} {tree:24s} median {statistics.median(t):7.1f} ns/call")


if __name__ == "__main__":
    main(sys.argv[1:])
