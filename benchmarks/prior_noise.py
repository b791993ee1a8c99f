"""Where the error of an estimated target prior comes from, on a finished run: miscalibration or
sampling noise. The figures behind docs/label-shift.md's paragraph on the tilted family (issue 10, §3).

Protocol of `lade evaluate`'s estimated-prior table: half of each test class is the labelled
held-out set (it fits bias-corrected temperature scaling, BCTS); each target subset is drawn from
the other half. Targets: the eleven shifted tests of spec §2.3, then --dirichlet draws from each of
Dirichlet(0.3), Dirichlet(1) and Dirichlet(3) (seeds 100, 101, ...; off the tilted family).

Part 1, one line per target, free EM with BCTS and the default pseudo-count:
  gap     top-1 with the EM estimate minus top-1 with the true (oracle) prior, in points;
  l1_em   L1 distance of the EM estimate from the true prior;
  l1_cal  L1 distance from the true prior of the mean of the calibrated posteriors reweighted to
          the true prior. EM's fixed point is where that mean equals the prior, so l1_cal is what
          miscalibration alone would move the estimate by; what l1_em has beyond it is sampling
          noise of the subset (finite images over many classes).
Part 2: the same gap for each --pseudo-counts value, per target and averaged.

    python benchmarks/prior_noise.py RUN_DIR [--pseudo-counts 0 0.1 0.3 1] [--dirichlet 4]

Logits only (no training, no images): about a minute for a CIFAR-100 run on 2 cores.
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lade import losses, metrics, prior_shift  # noqa: E402
from lade.app import config, evaluation, runs  # noqa: E402
from lade.priors import prior_from_counts, prior_from_labels  # noqa: E402
from lade.sampling import SHIFT_SETTINGS, dirichlet_priors, prior_test_subset, shifted_test_subset  # noqa: E402

DIRICHLET_ALPHAS = (0.3, 1.0, 3.0)


def targets(pool_labels, p_s, draws):
    for (direction, ratio), name in zip(SHIFT_SETTINGS, evaluation.SETTING_NAMES):
        yield name, shifted_test_subset(pool_labels, p_s, ratio, direction)
    for alpha in DIRICHLET_ALPHAS:
        for k in range(draws):
            prior = dirichlet_priors(1, p_s.shape[0], alpha, seed=100 + k)[0]
            yield f"D{alpha:g}#{k}", prior_test_subset(pool_labels, prior)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--pseudo-counts", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    ap.add_argument("--dirichlet", type=int, default=4, help="draws per concentration (default 4)")
    args = ap.parse_args()

    cfg = config.load(args.run_dir / "config.yaml")
    arrays = runs.load_arrays(args.run_dir)
    f, y = arrays["test_logits"], arrays["test_labels"]
    if f is None or y is None:
        sys.exit(f"prior_noise: '{args.run_dir}' has no test_logits.npy / test_labels.npy (not finished)")
    p_s = prior_from_counts(arrays["train_counts"])
    classes = p_s.shape[0]
    form = losses.test_time_form(cfg["loss"]["name"])  # the report's test-time adjustment of this loss

    def source_logits(rows):
        return evaluation.source_logits(np.ascontiguousarray(f[rows]), form, p_s)

    def top1(rows, p_t):
        return 100 * metrics.accuracy(evaluation.adjust(np.ascontiguousarray(f[rows]), form, p_s, p_t), y[rows])

    held, pool = evaluation.held_out_halves(y, classes)
    calib_z, calib_y = source_logits(held), np.ascontiguousarray(y[held])
    no_shift = prior_from_labels(calib_y, classes)
    warnings.simplefilter("ignore")  # EM's convergence notes; this script reports the outcome

    subsets = [(name, pool[sub.indices], sub.prior) for name, sub in targets(y[pool], p_s, args.dirichlet)]
    print(f"run {args.run_dir} loss {cfg['loss']['name']} classes {classes} held-out {held.size} pool {pool.size}")
    print("part 1: free EM, BCTS, pseudo-count 1")
    print(f"{'target':9s} {'images':>6s} {'oracle':>6s} {'gap':>6s} {'l1_em':>6s} {'l1_cal':>6s}")
    for name, rows, p_t in subsets:
        z = source_logits(rows)
        res = prior_shift.adapt(z, no_shift, calib_z, calib_y, calibration="bcts", gate=None, family="free")
        reweighted = prior_shift.reweight(res.calibration(z), res.reference_prior, p_t).mean(axis=0)
        oracle = top1(rows, p_t)
        print(f"{name:9s} {rows.size:6d} {oracle:6.2f} {top1(rows, res.prior) - oracle:+6.2f} "
              f"{np.abs(res.prior - p_t).sum():6.3f} {np.abs(reweighted - p_t).sum():6.3f}", flush=True)

    print("part 2: gap to the oracle (points) by pseudo-count")
    print(f"{'target':9s} " + " ".join(f"{'pc=' + format(pc, 'g'):>7s}" for pc in args.pseudo_counts))
    total = np.zeros(len(args.pseudo_counts))
    for name, rows, p_t in subsets:
        z, oracle = source_logits(rows), top1(rows, p_t)
        gaps = np.array([top1(rows, prior_shift.adapt(z, no_shift, calib_z, calib_y, calibration="bcts", gate=None,
                                                      pseudo_count=pc, family="free").prior) - oracle
                         for pc in args.pseudo_counts])
        total += gaps
        print(f"{name:9s} " + " ".join(f"{g:+7.2f}" for g in gaps), flush=True)
    print(f"{'mean':9s} " + " ".join(f"{g:+7.2f}" for g in total / len(subsets)))


if __name__ == "__main__":
    main()
