"""LADE-CE + LADER (the LADE loss), forward and backward, lade vs the same math in PyTorch.

B = 256, C = 100 and C = 1000, float32, official LADER form, alpha 0.1, remine_lambda 0.01.
Reports the median time per call of each and, on the last line, `lade_loss ratio=R` with
R = total torch time / total lade time over both sizes (R > 1: lade is faster). PyTorch is
timed with its default thread count and with one thread and credited with the faster of the
two (on a loaded machine its thread pool can be much slower than one thread).
"""
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout
import lade  # noqa: E402
from lade import losses, priors  # noqa: E402

B, ALPHA, LAMBDA = 256, 0.1, 0.01


def torch_lade(z, y, log_prior, prior, column_offset):
    ce = F.cross_entropy(z + log_prior, y)
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
    m = onehot.sum(0)
    first = (z * onehot).sum(0) / (m + 1e-8)
    S = torch.logsumexp(z + column_offset, 0) - math.log(z.shape[0])
    lader = -(prior * (first - S - LAMBDA * S * S)).sum()
    return ce + ALPHA * lader


def median_time(fn, reps=50, rounds=7):
    for _ in range(5):
        fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times)


def main():
    torch_total = lade_total = 0.0
    print(f"threads: lade {lade.get_num_threads()}, torch {torch.get_num_threads()}")
    for classes in (100, 1000):
        rng = np.random.default_rng(0)
        z = (rng.normal(size=(B, classes)) * 3).astype(np.float32)
        y = rng.integers(0, classes, B).astype(np.int64)
        prior = priors.prior_from_counts(priors.lt_profile(classes, 500, 0.01))

        loss = losses.LADELoss(prior, alpha=ALPHA, remine_lambda=LAMBDA)
        grad = np.empty_like(z)
        value, _ = loss(z, y, grad)
        t_lade = median_time(lambda: loss(z, y, grad))

        zt = torch.tensor(z, requires_grad=True)
        yt = torch.tensor(y)
        pt = torch.tensor(prior)
        log_prior = torch.log(pt + 1e-9)
        column_offset = math.log(1.0 / classes + 1e-9) - torch.log(pt + 1e-9)

        def torch_step():
            zt.grad = None
            torch_lade(zt, yt, log_prior, pt, column_offset).backward()

        torch_step()
        ref_value = torch_lade(zt, yt, log_prior, pt, column_offset).item()
        max_grad_diff = float(np.abs(zt.grad.numpy() - grad).max())
        default_threads = torch.get_num_threads()
        t_torch = median_time(torch_step)
        torch.set_num_threads(1)
        t_torch = min(t_torch, median_time(torch_step))
        torch.set_num_threads(default_threads)
        print(f"C={classes:5d} B={B}: lade {t_lade * 1e6:8.1f} us  torch {t_torch * 1e6:8.1f} us  "
              f"ratio {t_torch / t_lade:5.2f}  |value diff| {abs(value - ref_value):.2e}  "
              f"max |grad diff| {max_grad_diff:.2e}")
        torch_total += t_torch
        lade_total += t_lade
    print(f"lade_loss ratio={torch_total / lade_total:.2f}")


if __name__ == "__main__":
    main()
