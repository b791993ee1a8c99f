"""The suite of shifts nobody tuned to (issue 26 §1-2): its draws, its bookkeeping, the estimators it
measures, and the goals on a short real model.

The real model: CIFAR-10-LT (imbalance 100, the JPEG list files at 16x16), LADE, 4 epochs, trained
with the CLI (SHORT_MODEL_COMMAND); its test logits, labels and training counts are stored in
tests/data/cifar10_lt_lade_e4_logits.npz (logits as float16), so the suite runs on it in CI in seconds.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from lade import posthoc, prior_shift, sampling
from lade.app import shift_suite
from test_cli import fake_run

DATA = Path(__file__).resolve().parent / "data"
SHORT_MODEL = DATA / "cifar10_lt_lade_e4_logits.npz"
SHORT_MODEL_COMMAND = (
    "tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/lade-data && python3 -m lade train --config "
    "cifar10_jpeg_lt_100_lade --data-root /tmp/lade-data --out runs/c10_lade_e4 --no-report optim.epochs=4 "
    "'optim.milestones=[4]' optim.warmup_epochs=1 optim.lr=0.1 optim.batch_size=128 data.resolution=16 "
    "run.eval_every=0")


# ------------------------------------------------------------------------------------------ draws
def _pool(classes, per_class, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class)).astype(np.int64)


def test_suite_draws_are_fixed_and_without_replacement():
    y = _pool(100, 50)
    first = list(sampling.shift_suite(y, 100))
    again = list(sampling.shift_suite(y, 100))
    assert [t.name for t in first] == [t.name for t in again]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.indices, b.indices)
    names = [t.name for t in first]
    assert all(names.count(n) == (1 if n == "pool" else sampling.SUITE_DRAWS) for n in sampling.SUITE_TARGETS)
    ranked = np.linspace(1, 0.01, 100) / np.linspace(1, 0.01, 100).sum()  # a prior ranking the classes by index
    for t in first:
        assert np.unique(t.indices).size == t.indices.size  # without replacement
        np.testing.assert_array_equal(np.bincount(y[t.indices], minlength=100), t.counts)
        np.testing.assert_allclose(t.prior, t.counts / t.counts.sum(), rtol=1e-6)
        kind, param = sampling.SUITE_TARGETS[t.name]
        if kind == "lt":
            # spec §2.3's forward counts, over another class order
            assert sorted(t.counts.tolist()) == sorted(
                sampling.shifted_test_subset(y, ranked, param, "forward").counts.tolist())
        elif kind == "k":
            assert sorted(set(t.counts.tolist())) == [0, 50] and np.count_nonzero(t.counts) == param
        elif kind == "size":
            assert t.indices.size == param
        elif kind == "pool":
            assert t.indices.size == y.size
        else:
            assert t.counts.max() == 50
    lt50 = [t.counts for t in first if t.name == "LT50"]
    assert not np.array_equal(lt50[0], lt50[1])  # the class order differs between draws
    dir01 = [np.count_nonzero(t.counts) for t in first if t.name == "Dir0.1"]
    assert max(dir01) < 60  # Dirichlet(0.1) leaves most classes out: a sparse target


def test_suite_on_few_classes_leaves_out_the_k_it_cannot_draw_and_checks_its_pool():
    names = {t.name for t in sampling.shift_suite(_pool(10, 20), 10, draws=1)}
    assert "k20" not in names and {"k2", "k5"} <= names
    with pytest.raises(ValueError, match="shift_suite: argument 'pool_labels' must hold the same number"):
        list(sampling.shift_suite(np.array([0, 0, 1], np.int64), 2))
    with pytest.raises(ValueError, match=r"shift_suite: unknown target\(s\) \['LT5'\]"):
        list(sampling.shift_suite(_pool(10, 20), 10, targets=["LT5"]))


# ------------------------------------------------------------------------------------- bookkeeping
def _results(accuracies):
    """A results dict of one target type 'k5' from {method: [accuracy per draw]}."""
    draws = len(next(iter(accuracies.values())))
    rows = [{"target": "k5", "draw": d, "images": 250, "accuracy": {m: a[d] for m, a in accuracies.items()},
             "abs_error": {m: 0.01 for m in accuracies if m not in ("none", "oracle")},
             "kl": {m: 0.1 for m in accuracies if m not in ("none", "oracle")}} for d in range(draws)]
    return {"estimators": {m: m for m in accuracies if m not in ("none", "oracle")}, "targets": ["k5"],
            "draws": rows}


def test_goal_misses_compare_with_the_better_baseline():
    base = {"none": [0.4] * 5, "oracle": [0.8] * 5, "mlls": [0.70, 0.70, 0.70, 0.70, 0.70],
            "bbse": [0.72, 0.66, 0.72, 0.66, 0.72]}  # better mean: bbse 0.696 < mlls 0.70
    one_bad = _results({**base, "default": [0.71, 0.71, 0.71, 0.71, 0.66]})  # mean 0.70, draw 4 0.06 below bbse
    s = shift_suite.suite_summary(one_bad)["k5"]["default"]
    assert s["gap_mean"] == pytest.approx(0.0, abs=1e-12) and s["gap_worst"] == pytest.approx(0.66 - 0.72)
    assert shift_suite.goal_misses(one_bad) == ["k5: worst draw -6.00 points against the better baseline"]
    met = _results({**base, "default": [0.71, 0.70, 0.71, 0.70, 0.71]})
    assert shift_suite.goal_misses(met) == []
    low = _results({**base, "bbse": [0.70] * 5, "default": [0.69] * 5})
    assert shift_suite.goal_misses(low) == ["k5: mean -1.00 points against the better baseline"]
    assert "| mlls | 70.00 / 70.00 |" in shift_suite.suite_table(met)


# -------------------------------------------------------------------------------------- estimators
def _sparse_task(n, present, seed, radius=3.0):
    """20 classes, 2-D Gaussians on a circle, logits exact for a uniform source prior; the target has
    only the classes in `present`."""
    classes, rng = 20, np.random.default_rng(seed)
    means = radius * np.stack([np.cos(2 * np.pi * np.arange(classes) / classes),
                            np.sin(2 * np.pi * np.arange(classes) / classes)], 1)
    y = rng.choice(present, size=n)
    x = means[y] + rng.normal(size=(n, 2))
    return np.ascontiguousarray(-0.5 * ((x[:, None] - means[None]) ** 2).sum(2), dtype=np.float32), y


def test_selection_finds_a_sparse_target_that_smoothing_blurs():
    z, y = _sparse_task(300, [0, 5, 10, 15], 1)
    uniform = np.full(20, 0.05, np.float32)
    truth = np.bincount(y, minlength=20) / y.size
    fixed = prior_shift.adapt(z, uniform, calibration="none", gate=None, family="free")  # pseudo count 1: 20 rows of 300
    chosen = prior_shift.adapt(z, uniform, calibration="none", family="select")
    assert chosen.family == "sparse" and chosen.support == 4 and not chosen.gated
    assert chosen.shift_test["dof"] == 3 and chosen.shift_test["p_value"] < 1e-6
    assert np.abs(chosen.prior - truth).sum() < 0.5 * np.abs(fixed.prior - truth).sum()
    eb = prior_shift.adapt(z, uniform, calibration="none", gate=None, pseudo_count="auto", family="free")
    assert eb.smoothing_strength < 5  # far weaker than add-one smoothing's 20 pseudo rows (measured 2.7)
    assert np.abs(eb.prior - truth).sum() < 0.7 * np.abs(fixed.prior - truth).sum()  # measured 0.47 vs 0.78
    prior, strength, _, converged, _ = prior_shift.em_prior_eb(posthoc.softmax(z), uniform)  # the same, by hand
    assert converged and strength == eb.smoothing_strength
    np.testing.assert_array_equal(prior, eb.prior)


def test_the_default_takes_a_sparse_estimate_where_a_few_classes_are_present():
    """family='auto' (the default): the tilted family is rejected, then the sparse prior on the free estimate's
    top classes is kept (BIC picks it and its test within the free prior does not reject it); it removes the
    mass the free estimate and its add-one smoothing leave on the 16 absent classes. Without calibration data
    to check the classifier on, or with a classifier whose confusion matrix is ill-conditioned, it stays free."""
    uniform = np.full(20, 0.05, np.float32)
    calib_z, calib_y = _sparse_task(2000, np.arange(20), 7, radius=5.0)  # neighbours 1.6 standard deviations apart
    z, y = _sparse_task(300, [0, 5, 10, 15], 1, radius=5.0)
    truth = np.bincount(y, minlength=20) / y.size
    res = prior_shift.adapt(z, uniform, calib_z, calib_y)
    assert res.family == "sparse" and res.support == 4 and not res.gated
    assert res.family_test["p_value"] < 0.05 and res.family_test["sparse"]["p_value"] >= 0.05
    assert res.family_test["sparse"]["dof"] == 16 and res.condition_number <= prior_shift.COND_LIMIT
    dense = prior_shift.Gated(prior_shift.AutoFamilyEM(sparse=False)).fit(calib_z, calib_y, uniform).adapt(z)
    assert dense.family == "free" and "sparse" not in dense.family_test
    assert np.abs(res.prior - truth).sum() < 0.5 * np.abs(dense.prior - truth).sum()
    assert np.mean(res.probs.argmax(1) == y) > np.mean(dense.probs.argmax(1) == y)
    assert prior_shift.adapt(z, uniform, calibration="none").family == "free"  # nothing to check the ranking on
    weak_calib = _sparse_task(2000, np.arange(20), 7)  # neighbours 0.9 standard deviations apart: confused
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        weak = prior_shift.adapt(_sparse_task(300, [0, 5, 10, 15], 1)[0], uniform, *weak_calib)
    assert weak.family == "free" and weak.condition_number > prior_shift.COND_LIMIT


def test_sparse_cv_is_leave_one_out_by_hand():
    """With one row a fold (leave-one-out, where the folds' permutation cannot matter), sparse_cv is
    select_prior and em_prior fitted without each row in turn, scored on that row."""
    z, _ = _sparse_task(40, [0, 5, 10, 15], 3, radius=5.0)
    probs, uniform = posthoc.softmax(z), np.full(20, 0.05, np.float32)
    want_sparse = want_free = 0.0
    for i in range(probs.shape[0]):
        rest = np.ascontiguousarray(np.delete(probs, i, 0))
        prior, kind, *_ = prior_shift.select_prior(rest, uniform, noise=1.5)
        assert kind == "sparse"
        want_sparse += np.log(probs[i].astype(np.float64) @ (prior / uniform))
        free = prior_shift.em_prior(rest, uniform, pseudo_count=1.0, tol=1e-10, accelerate=True)[0]
        want_free += np.log(probs[i].astype(np.float64) @ (free / uniform))
    got = prior_shift.sparse_cv(probs, uniform, noise=1.5, folds=probs.shape[0], tol=1e-10)
    np.testing.assert_allclose(got, (want_sparse, want_free), rtol=1e-5)
    assert got[0] > got[1]  # four classes present: the sparse prior predicts the left-out rows better
    # a target with every class present: BIC picks no sparse prior, so the sparse estimate scores -inf
    z, _ = _sparse_task(400, np.arange(20), 5, radius=5.0)
    sparse, free = prior_shift.sparse_cv(posthoc.softmax(z), uniform)
    assert sparse == -np.inf and np.isfinite(free)
    for kw, message in ((dict(folds=1), r"argument 'folds' must be in \[2, rows = 400\], got 1"),
                        (dict(noise=0.5), "argument 'noise' must be finite and >= 1"),
                        (dict(pseudo_count=-1.0), "argument 'pseudo_count' must be finite and >= 0")):
        with pytest.raises(ValueError, match="lade.prior_shift.sparse_cv: " + message):
            prior_shift.sparse_cv(posthoc.softmax(z), uniform, **kw)


def test_the_default_keeps_the_sparse_estimate_only_where_it_predicts_unseen_rows():
    """Where most classes are present but a few carry most of the mass (a Dirichlet-like target), BIC and the
    likelihood-ratio test, judged on the rows they were fitted on, keep a support that drops the small
    classes; their rows then go to the wrong classes. The cross-validation sees those rows predicted worse
    than by the add-one smoothed free estimate and keeps the free one. The decision is the comparison of the
    two scores it reports, and without the check (sparse_cv=False) the sparse estimate is taken."""
    uniform = np.full(20, 0.05, np.float32)
    calib_z, calib_y = _sparse_task(2000, np.arange(20), 7, radius=5.0)
    rng = np.random.default_rng(11)
    target = np.full(20, 0.2 / 16)
    target[[0, 5, 10, 15]] = 0.2
    # _sparse_task draws its labels uniformly from `present`: a list of labels drawn from `target` makes them
    # follow that prior
    z, y = _sparse_task(400, rng.choice(20, size=4000, p=target)[:400], 1, radius=5.0)
    checked = prior_shift.Gated(prior_shift.AutoFamilyEM()).fit(calib_z, calib_y, uniform).adapt(z)
    unchecked = prior_shift.Gated(prior_shift.AutoFamilyEM(sparse_cv=False)).fit(calib_z, calib_y, uniform).adapt(z)
    assert unchecked.family == "sparse" and checked.family == "free"
    cv = checked.family_test["sparse"]["cross_validation"]
    assert cv["folds"] == prior_shift.SPARSE_FOLDS and cv["sparse"] < cv["free"]
    truth = np.bincount(y, minlength=20) / y.size
    assert np.abs(checked.prior - truth).sum() < np.abs(unchecked.prior - truth).sum()
    assert np.mean(checked.probs.argmax(1) == y) > np.mean(unchecked.probs.argmax(1) == y)
    # four classes alone: the sparse estimate predicts the rows better and is kept
    z4, _ = _sparse_task(300, [0, 5, 10, 15], 1, radius=5.0)
    res = prior_shift.Gated(prior_shift.AutoFamilyEM()).fit(calib_z, calib_y, uniform).adapt(z4)
    cv = res.family_test["sparse"]["cross_validation"]
    assert res.family == "sparse" and cv["sparse"] >= cv["free"]


def test_selection_of_one_class_is_not_gated():
    z, y = _sparse_task(200, [3], 4)
    res = prior_shift.adapt(z, np.full(20, 0.05, np.float32), calibration="none", family="select")
    assert res.family == "sparse" and res.support == 1 and not res.gated and res.prior.argmax() == 3


def test_selection_keeps_no_shift_when_there_is_none():
    z, _ = _sparse_task(2000, np.arange(20), 2)
    uniform = np.full(20, 0.05, np.float32)
    res = prior_shift.adapt(z, uniform, calibration="none", family="select")
    assert res.family == "none" and res.gated and res.shift_test["dof"] == 0
    np.testing.assert_array_equal(res.prior, uniform)
    # the evidence reads the maximum-likelihood estimate's noise (these classes overlap heavily) as
    # dispersion: less smoothing than it should (measured A = 8.3), still half the free estimate's error
    ml = prior_shift.adapt(z, uniform, calibration="none", gate=None, pseudo_count=0.0, family="free")
    eb = prior_shift.adapt(z, uniform, calibration="none", gate=None, pseudo_count="auto", family="free")
    assert 1 < eb.smoothing_strength < 20
    assert np.abs(eb.prior - uniform).sum() < 0.6 * np.abs(ml.prior - uniform).sum()  # measured 0.31 vs 0.71


def test_new_estimator_arguments_are_validated():
    z, _ = _sparse_task(100, [0, 1], 3)
    uniform = np.full(20, 0.05, np.float32)
    for extra, error, message in (
            (dict(method="bbse", calib_logits=z, calib_labels=np.arange(100) % 20), ValueError,
             "argument 'pseudo_count' does not apply to BBSE"),
            (dict(family="free", bootstrap=5), ValueError, "argument 'bootstrap' does not apply to EmpiricalBayesEM"),
            (dict(family="auto"), TypeError, "argument 'pseudo_count' must be a number")):
        with pytest.raises(error, match=f"adapt: {message}"):
            prior_shift.adapt(z, uniform, calibration="none", pseudo_count="auto", **extra)
    with pytest.raises(TypeError, match="adapt: argument 'pseudo_count' must be a number"):
        prior_shift.adapt(z, uniform, pseudo_count="smooth", family="free")
    with pytest.raises(ValueError, match="select_prior: argument 'penalty' must be finite and >= 0"):
        prior_shift.select_prior(posthoc.softmax(z), uniform, penalty=-1)
    with pytest.raises(ValueError, match="select_prior: argument 'noise' must be finite and >= 1"):
        prior_shift.select_prior(posthoc.softmax(z), uniform, noise=0.5)
    with pytest.raises(ValueError, match="adapt: argument 'bootstrap' does not apply to SelectEM"):
        prior_shift.adapt(z, uniform, family="select", bootstrap=5)


# ------------------------------------------------------------------------------ a short real model
@pytest.fixture(scope="module")
def short_model_suite():
    d = np.load(SHORT_MODEL)
    f, y = np.ascontiguousarray(d["test_logits"], dtype=np.float32), d["test_labels"].astype(np.int64)
    p_s = (d["train_counts"] / d["train_counts"].sum()).astype(np.float32)
    estimators = {m: shift_suite.SUITE_ESTIMATORS[m] for m in ("default", *shift_suite.BASELINES)}
    return shift_suite.suite_results(f, y, p_s, "add_target", estimators=estimators)


def test_short_model_suite_goals_where_they_are_met(short_model_suite):
    """A weak model (18.6 % balanced top-1 after 4 epochs; BBSE's confusion matrix is too ill-conditioned
    and it falls back to no shift on every draw, and the default's sparse step is off for the same reason).
    The default (family 'auto', gated, pseudo count AUTO_PSEUDO_COUNT) meets the uniform goal and, on
    average, the goal against the better baseline on the whole pool, 1,000 random images, the long-tail
    profile of ratio 50 (+1.45 points), Dirichlet(0.3) and (1), and the 2- and 5-class targets. It misses
    it (docs/label-shift.md, the suite's table) on the ratio-10 profile (-1.80), Dirichlet(0.1) (-3.20) and
    (3) (-1.98), where plain MLLS + BCTS is better, and by 0.7 on 200 random images. With add-one smoothing
    (the default before the cross-validated sparse step) it missed LT50, k2 and k5 too (-2.2, -3.1, -5.4).
    Those misses are asserted too, so that a change of the default that removes one (or a regression that
    adds one) shows here."""
    summary = shift_suite.suite_summary(short_model_suite)
    pool = summary["pool"]
    assert pool["default"]["mean"] >= pool["none"]["mean"] - 0.005  # the uniform goal
    met = {t for t, e in summary.items() if e["default"]["gap_mean"] >= -0.005}
    assert met == {"pool", "n1000", "LT50", "Dir0.3", "Dir1", "k2", "k5"}, sorted(met)
    for t, e in summary.items():  # the oracle is an upper bound on average (a sanity check of the suite)
        assert e["oracle"]["mean"] >= max(e[m]["mean"] for m in ("default", "mlls", "bbse")) - 0.01, t
    bbse_fell_back = all(r["accuracy"]["bbse"] == r["accuracy"]["none"] for r in short_model_suite["draws"])
    assert bbse_fell_back


def test_the_benchmark_runs_on_a_run_folder(tmp_path):
    """benchmarks/prior_shift_suite.py end to end on the short model's logits (one draw of two targets)."""
    d = np.load(SHORT_MODEL)
    fake_run(tmp_path / "run", "lade", np.ascontiguousarray(d["test_logits"], dtype=np.float32),
             d["test_labels"].astype(np.int64), d["train_counts"])
    out = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "prior_shift_suite.py"), str(tmp_path / "run"),
                          "--targets", "k2", "pool", "--draws", "1", "--json", str(tmp_path / "suite.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "| top-1 %: mean / worst draw | k2 | pool |" in out.stdout and "goals of issue 26" in out.stdout
    for label in (label for label, _ in shift_suite.SUITE_ESTIMATORS.values()):
        assert f"| {label} | " in out.stdout
    assert len(json.loads((tmp_path / "suite.json").read_text())["draws"]) == 2
