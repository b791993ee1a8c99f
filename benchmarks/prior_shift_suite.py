"""The suite of shifts nobody tuned to (issue 26 §1-2) on a finished run: every estimator of
lade.app.shift_suite.SUITE_ESTIMATORS against the oracle and no adjustment, on every target type of
lade.sampling.SUITE_TARGETS (long-tail profiles over random class orders, Dirichlet priors, k classes
present, small random sets, the whole pool), mean and worst draw; then the prior's own error and each
estimator's misses of the issue's goals.

    python benchmarks/prior_shift_suite.py RUN_DIR [--draws 5] [--targets LT50 k5 ...] [--estimators rlls ...]
                                           [--json out.json]
    python benchmarks/prior_shift_suite.py zoo:NAME [--data-root DIR]   # the zoo entry's logits, recomputed

Logits only (no training): a few minutes for a CIFAR-100 run on 2 cores, seconds for CIFAR-10.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lade.app import shift_suite, zoo_entries  # noqa: E402
from lade.sampling import SUITE_DRAWS, SUITE_TARGETS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished run folder, or zoo:NAME")
    ap.add_argument("--draws", type=int, default=SUITE_DRAWS, help=f"draws per target type (default {SUITE_DRAWS})")
    ap.add_argument("--targets", nargs="+", choices=list(SUITE_TARGETS), help="only these target types")
    ap.add_argument("--estimators", nargs="+", choices=list(shift_suite.SUITE_ESTIMATORS),
                    help="only these estimators (the default and the baselines always run: the goals need them)")
    ap.add_argument("--data-root", help="for zoo:NAME: the data root of its dataset")
    ap.add_argument("--json", type=Path, help="also write the per-draw results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run)
        if args.run.startswith(zoo_entries.ZOO_PREFIX):
            name = args.run[len(zoo_entries.ZOO_PREFIX):]
            run_dir = zoo_entries.materialize(name, Path(tmp) / name, args.data_root)[0]
        f, y, p_s, form, loss = shift_suite.run_logits(run_dir)
        start = time.time()
        names = shift_suite.SUITE_ESTIMATORS if not args.estimators else dict.fromkeys(
            ["default", *shift_suite.BASELINES, *args.estimators])
        estimators = {m: shift_suite.SUITE_ESTIMATORS[m] for m in names}
        results = shift_suite.suite_results(f, y, p_s, form, estimators, draws=args.draws,
                                            targets=args.targets)
    print(f"run {args.run}: loss {loss}, {p_s.shape[0]} classes, {f.shape[0]} test images (half held out), "
          f"{len(results['draws'])} target sets in {time.time() - start:.0f} s\n")
    print(shift_suite.suite_table(results))
    print("goals of issue 26 §2 (mean >= better baseline - 0.5, every draw >= it - 2, pool >= no adjustment - 0.5):")
    for m, label in results["estimators"].items():
        misses = shift_suite.goal_misses(results, m)
        print(f"- {label}: " + ("all met" if not misses else "; ".join(misses)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
