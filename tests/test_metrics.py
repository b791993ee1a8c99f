"""Metrics against hand-computed cases and a NumPy transcription of spec §2.4."""
import math

import numpy as np
import pytest

from lade import metrics

f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731


def test_topk_hand_case_and_ties():
    s = f32([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.3, 0.5]])
    y = i64([2, 0, 1])
    assert metrics.accuracy(s, y) == 0.0
    assert metrics.topk_accuracy(s, y, 2) == 1.0
    acc, mask = metrics.topk_accuracy(s, y, 1, return_correct=True)
    assert mask.tolist() == [False, False, False]
    tie = f32([[0.5, 0.5], [0.5, 0.5]])
    assert metrics.topk_accuracy(tie, i64([0, 1]), 1, return_correct=True)[1].tolist() == [True, False]
    assert metrics.predictions(tie).tolist() == [0, 0]


def test_confusion_per_class_and_shots():
    preds, labels = i64([0, 1, 1, 2]), i64([0, 1, 2, 2])
    cm = metrics.confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    acc = metrics.per_class_accuracy(cm)
    assert acc[:3].tolist() == [1.0, 1.0, 0.5] and math.isnan(acc[3])
    shots = metrics.shot_accuracy([1.0, 0.5, 0.25, float("nan")], [150, 100, 20, 5])
    assert shots["many"] == 1.0 and shots["medium"] == 0.375 and math.isnan(shots["few"])
    shots = metrics.shot_accuracy([1.0, 0.5, 0.25, 0.0], [101, 100, 20, 19])
    assert (shots["many"], shots["medium"], shots["few"]) == (1.0, 0.375, 0.0)
    scores = f32(np.eye(4)[[0, 1, 1, 2]])
    assert (metrics.confusion_matrix(scores, labels, 4) == cm).all()
    with pytest.raises(ValueError, match=r"argument 'predictions'.*predictions\[0\] = 4"):
        metrics.confusion_matrix(i64([4, 1, 1, 2]), labels, 4)
    # issue 28: negative counts gave [1, 1, 1]; counts whose row sum overflows are refused too
    with pytest.raises(ValueError, match=r"lade.metrics.per_class_accuracy: argument 'confusion': "
                                         r"confusion\[0\]\[1\] = -1 is negative"):
        metrics.per_class_accuracy(i64([[0, -1, 1], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"lade.metrics.per_class_accuracy: argument 'confusion': row 1 sums"):
        metrics.per_class_accuracy(i64([[1, 0], [2 ** 62, 2 ** 62]]))


def test_ece_standard_hand_case():
    p = f32([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.55, 0.45, 0.0], [0.4, 0.3, 0.3]])
    y = i64([0, 1, 0, 2])
    expected = 0.5 * abs(0.5 - 0.9) + 0.25 * abs(1 - 0.55) + 0.25 * abs(0 - 0.4)
    assert metrics.ece(p, y) == pytest.approx(expected, abs=1e-6)
    d = metrics.reliability_diagram(p, y)
    assert d["count"].sum() == 4 and d["count"][13] == 2 and len(d["count"]) == 16
    assert d["accuracy"][13] == 0.5 and d["confidence"][13] == pytest.approx(0.9, abs=1e-6)
    assert d["edges"][0] == 0 and d["edges"][-1] == 1.0 and len(d["edges"]) == 16


def spec20_reference(probs, labels, num_bins=20):
    """spec §2.4 transcribed: upper edges linspace(0, 1, 21)[1:], bin = #edges <= conf."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)[1:]
    bins = np.digitize(conf, edges)
    sums = np.bincount(bins, weights=conf, minlength=num_bins).astype(np.float64)
    counts = np.bincount(bins, minlength=num_bins) + np.finfo(np.float64).eps
    acc = np.bincount(bins, weights=correct, minlength=num_bins) / counts
    return np.sum(np.abs(acc - sums / counts) * counts / len(conf))


def test_ece_spec20_matches_transcription_and_edges():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 10)) * 3
    p = f32(np.exp(z) / np.exp(z).sum(1, keepdims=True))
    y = i64(rng.integers(0, 10, 2000))
    assert metrics.ece(p, y, variant="spec20") == pytest.approx(spec20_reference(p, y), abs=1e-12)
    # confidence exactly 1.0 gets its own bin; exactly 0.5 goes up into [0.5, 0.55)
    q = f32([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    d = metrics.reliability_diagram(q, i64([0, 0, 1]), variant="spec20")
    assert d["count"][20] == 1 and d["count"][10] == 2 and len(d["count"]) == 21
    assert metrics.ece(q, i64([0, 0, 1]), variant="spec20") == pytest.approx(spec20_reference(q, i64([0, 0, 1])),
                                                                             abs=1e-15)
    # the standard variant puts 1.0 in the last regular bin and 0.5 into (7/15, 8/15]
    d = metrics.reliability_diagram(q, i64([0, 0, 1]))
    assert d["count"][14] == 1 and d["count"][7] == 2 and d["count"][15] == 0


def test_nll_brier_hand_case():
    p = f32([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    y = i64([0, 0])
    assert metrics.nll(p, y) == pytest.approx((-math.log(0.7) - math.log(1e-15)) / 2, rel=1e-6)
    assert metrics.brier(p, y) == pytest.approx((0.49 + 0.04 + 0.01 - 1.4 + 1 + 1 - 0 + 1) / 2, rel=1e-6)


def test_summary_and_bad_input():
    p = f32([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    s = metrics.summary(p, i64([0, 2]), train_counts=[200, 50, 5])
    assert s["top1"] == 0.5 and s["top5"] == 1.0 and s["many"] == 1.0 and math.isnan(s["medium"])
    assert s["few"] == 0.0
    with pytest.raises(ValueError, match=r"labels\[1\] = 3"):
        metrics.accuracy(p, i64([0, 3]))
    with pytest.raises(ValueError, match=r"argument 'labels' must have shape \(2,\)"):
        metrics.nll(p, i64([0]))
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="argument 'probs'"):
        metrics.ece(bad, i64([0, 1]))
    with pytest.raises(ValueError, match="argument 'variant'"):
        metrics.ece(p, i64([0, 1]), variant="google")


def _paired_models(seed, models=3, n=5000, flip=0.1):
    """Method b agrees with method a except on a fraction `flip` of the samples, where a is right
    slightly more often: a strongly paired comparison."""
    rng = np.random.default_rng(seed)
    a = rng.random((models, n)) < 0.45
    flips = rng.random((models, n)) < flip
    b = np.where(flips, rng.random((models, n)) < 0.4, a)
    return a, b


def test_paired_bootstrap_difference_spread_and_interval():
    a, b = _paired_models(0)
    r = metrics.paired_bootstrap(a, b, replicates=1000, level=0.9, seed=4)
    assert r["difference"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    # the spread is the paired standard error of the per-sample margin's mean, far below the
    # unpaired one (two independent accuracies of about 0.45 on 5000 samples)
    margin = (a.astype(int) - b).mean(0)
    paired_se = margin.std() / np.sqrt(a.shape[1])
    assert r["replicates"].std() == pytest.approx(paired_se, rel=0.1)
    assert paired_se < 0.5 * np.sqrt(2 * 0.45 * 0.55 / a.shape[1] / a.shape[0])
    lo, hi = np.percentile(r["replicates"], [5, 95])
    assert (r["lo"], r["hi"]) == pytest.approx((lo, hi), abs=1e-12)
    again = metrics.paired_bootstrap(a, b, replicates=1000, level=0.9, seed=4)
    np.testing.assert_array_equal(again["replicates"], r["replicates"])
    assert not np.array_equal(metrics.paired_bootstrap(a, b, 1000, 0.9, seed=5)["replicates"], r["replicates"])


def test_paired_bootstrap_one_model_and_identity():
    a, b = _paired_models(1, models=1)
    one = metrics.paired_bootstrap(a[0], b[0], replicates=200)
    two = metrics.paired_bootstrap(a, b, replicates=200)
    np.testing.assert_array_equal(one["replicates"], two["replicates"])
    same = metrics.paired_bootstrap(a, a, replicates=200)
    assert same["difference"] == same["lo"] == same["hi"] == 0 and not same["replicates"].any()


@pytest.mark.parametrize("a,b,match", [
    (np.ones((2, 5), np.int64), np.ones((2, 5), bool), "correct_a.*dtype uint8, got int64"),
    (np.ones((2, 5), bool), np.ones((2, 6), bool), "correct_b"),
    (np.full((2, 5), 2, np.uint8), np.ones((2, 5), np.uint8), "correct_a.*0 or 1, got 2 at model 0, sample 0"),
])
def test_paired_bootstrap_refuses_bad_input(a, b, match):
    with pytest.raises((TypeError, ValueError), match=match):
        metrics.paired_bootstrap(a, b)
