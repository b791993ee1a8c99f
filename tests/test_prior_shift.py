"""Target-prior estimation: EM and BBSE recover a known prior from synthetic posteriors.

Synthetic task: 5 classes, 2-D unit Gaussians with means on a circle of radius 2, so the exact
source posterior logits are log p(x|y) + log p_s(y). Tolerance: max |p_hat - p_t| <= 0.02 (EM)
and <= 0.03 (BBSE) with 20000 test and 20000 calibration samples.
"""
import warnings

import numpy as np
import pytest

import lade
from lade import posthoc, prior_shift, priors

C = 5
MEANS = 2.0 * np.stack([np.cos(2 * np.pi * np.arange(C) / C), np.sin(2 * np.pi * np.arange(C) / C)], 1)
PS = np.array([0.4, 0.25, 0.15, 0.12, 0.08], np.float32)
PT = np.array([0.05, 0.1, 0.15, 0.3, 0.4], np.float32)


def draw(prior, n, seed):
    r = np.random.default_rng(seed)
    y = r.choice(C, size=n, p=prior / prior.sum()).astype(np.int64)
    x = MEANS[y] + r.normal(size=(n, 2))
    logits = -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(2) + np.log(PS)
    return np.ascontiguousarray(logits, dtype=np.float32), y


TEST_LOGITS, TEST_Y = draw(PT, 20000, 1)
CAL_LOGITS, CAL_Y = draw(PS, 20000, 2)


def test_em_recovers_prior_from_exact_posteriors():
    res = prior_shift.adapt(TEST_LOGITS, PS, method="em", calibration="none", family="free")
    assert np.abs(res.prior - PT).max() <= 0.02
    assert res.converged and res.iterations > 1
    np.testing.assert_allclose(res.probs.sum(1), 1, atol=1e-5)
    # the adapted posteriors are the source posteriors moved to the estimated prior
    expected = posthoc.softmax(TEST_LOGITS - np.log(PS) + np.log(res.prior))
    np.testing.assert_allclose(res.probs, expected, atol=1e-5)
    assert res.shift_test["p_value"] < 1e-10


def test_em_with_bcts_undoes_miscalibration():
    distort = lambda z: np.ascontiguousarray(2.5 * z + np.array([1, 0, -1, 0.5, 0]), dtype=np.float32)  # noqa: E731
    raw = prior_shift.adapt(distort(TEST_LOGITS), PS, method="em", calibration="none", family="free")
    fixed = prior_shift.adapt(distort(TEST_LOGITS), PS, calib_logits=distort(CAL_LOGITS), calib_labels=CAL_Y, family="free")
    assert np.abs(fixed.prior - PT).max() <= 0.02
    assert np.abs(raw.prior - PT).max() > 0.05  # calibration matters
    assert fixed.calibration.temperature == pytest.approx(2.5, rel=0.05)
    np.testing.assert_allclose(fixed.reference_prior, np.bincount(CAL_Y, minlength=C) / len(CAL_Y), rtol=1e-5)


def test_bbse_recovers_prior():
    for soft in (False, True):
        res = prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y, method="bbse",
                                soft=soft)
        assert np.abs(res.prior - PT).max() <= 0.03, soft
        assert not res.fell_back and 1 <= res.condition_number < 100
        assert res.shift_test["p_value"] < 1e-10


def test_no_shift_is_not_detected():
    same_logits, _ = draw(PS, 5000, 7)
    em = prior_shift.adapt(same_logits, PS, method="em", calibration="none", family="free")
    bb = prior_shift.adapt(same_logits, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y, method="bbse")
    assert em.shift_test["p_value"] > 0.01 and em.shift_test["dof"] == C - 1
    assert bb.shift_test["p_value"] > 0.01
    assert np.abs(em.prior - PS).max() < 0.03


def test_bootstrap_interval():
    for method in ("em", "bbse"):
        res = prior_shift.adapt(TEST_LOGITS[:4000], PS, calib_logits=CAL_LOGITS[:4000], calib_labels=CAL_Y[:4000],
                                method=method, bootstrap=60, seed=3, family="free")
        lo, hi = res.interval
        assert res.replicates.shape == (60, C) and res.level == 0.95
        assert (lo <= res.prior + 1e-6).all() and (res.prior <= hi + 1e-6).all(), method
        assert ((PT >= lo - 0.01) & (PT <= hi + 0.01)).all(), method
        assert (hi - lo).max() < 0.1
        again = prior_shift.adapt(TEST_LOGITS[:4000], PS, calib_logits=CAL_LOGITS[:4000],
                                  calib_labels=CAL_Y[:4000], method=method, bootstrap=60, seed=3, family="free")
        np.testing.assert_array_equal(again.replicates, res.replicates)


def test_bbse_ill_conditioned_warns_and_falls_back():
    cal_logits, cal_y = CAL_LOGITS.copy(), CAL_Y.copy()
    # classes 0 and 1 share one input: their confusion columns are proportional (singular)
    cal_logits[cal_y <= 1] = cal_logits[np.flatnonzero(cal_y == 0)[0]]
    with pytest.warns(RuntimeWarning, match="ill-conditioned.*falling back to no shift"):
        res = prior_shift.adapt(TEST_LOGITS, PS, calib_logits=cal_logits, calib_labels=cal_y, method="bbse",
                                calibration="none")
    assert res.fell_back and not np.isfinite(res.condition_number)
    # no shift from what the model's posteriors imply: the estimate is the reference prior and
    # the posteriors are left as they are
    np.testing.assert_array_equal(res.prior, res.reference_prior)
    np.testing.assert_allclose(res.probs, lade.posthoc.softmax(TEST_LOGITS), rtol=1e-5, atol=1e-7)


def test_bbse_soft_survives_a_class_never_predicted():
    # class 4 is pushed down so that argmax never picks it: the hard confusion matrix has a zero
    # row (singular), the soft one is still invertible and the simplex solve recovers the prior
    push = np.array([0, 0, 0, 0, -8.0], np.float32)
    test, cal = TEST_LOGITS + push, CAL_LOGITS + push
    assert (test.argmax(1) != 4).all() and (cal.argmax(1) != 4).all()
    with pytest.warns(RuntimeWarning, match="ill-conditioned"):
        hard = prior_shift.adapt(test, PS, calib_logits=cal, calib_labels=CAL_Y, method="bbse", calibration="none",
                                 soft=False)
    assert hard.fell_back and not np.isfinite(hard.condition_number)
    soft = prior_shift.adapt(test, PS, calib_logits=cal, calib_labels=CAL_Y, method="bbse", calibration="none")
    assert not soft.fell_back and np.isfinite(soft.condition_number)
    assert np.abs(soft.prior - PT).max() <= 0.03


def _bbse_quadratic(calib_probs, calib_y, test_probs, source, ridge):
    """G, h of soft BBSE's objective 0.5 q'Gq - h'q over the simplex (the weighted least squares
    of prior_shift.c), in float64 from the definitions."""
    classes = source.size
    counts = np.bincount(calib_y, minlength=classes)
    confusion = np.zeros((classes, classes))
    np.add.at(confusion.T, calib_y, calib_probs.astype(np.float64))  # [i, j]: sum of p_i over rows of class j
    confusion /= counts
    weight = 1.0 / np.maximum(confusion @ (counts / counts.sum()), 0.01 / classes)
    mu = test_probs.astype(np.float64).mean(0)
    G = confusion.T @ (weight[:, None] * confusion) + ridge * np.eye(classes)
    h = confusion.T @ (weight * mu) + ridge * source.astype(np.float64)
    return G, h


def _simplex_minimum_by_enumeration(G, h):
    """The exact minimiser: for every support, the minimiser on its face with sum 1 (a linear
    KKT system); the best one that is feasible."""
    classes, best, best_q = len(h), np.inf, None
    for mask in range(1, 2 ** classes):
        s = [c for c in range(classes) if mask >> c & 1]
        k = len(s)
        kkt = np.block([[G[np.ix_(s, s)], np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
        x = np.linalg.solve(kkt, np.concatenate([h[s], [1.0]]))[:k]
        if (x < -1e-12).any():
            continue
        q = np.zeros(classes)
        q[s] = x
        value = 0.5 * q @ G @ q - h @ q
        if value < best:
            best, best_q = value, q
    return best_q


@pytest.mark.parametrize("ridge", [0.0, 0.05])
@pytest.mark.parametrize("seed", range(12))
def test_bbse_solves_its_simplex_least_squares_exactly(seed, ridge):
    """8 weakly separated classes, a target prior without about half of them: the minimum lies on a
    face of the simplex, and in some draws (seeds 8, 10, 11 with ridge 0) the solver must free again
    a coordinate it had fixed at 0 on the way. Checked against enumerating every face."""
    classes, r = 8, np.random.default_rng(seed)
    calib_y = np.repeat(np.arange(classes), 40).astype(np.int64)
    target = r.dirichlet(np.full(classes, 0.5))
    target[r.random(classes) < 0.5] = 0
    test_y = r.choice(classes, 400, p=target / target.sum())
    probs = []
    for y in (calib_y, test_y):
        logits = r.normal(size=(len(y), classes))
        logits[np.arange(len(y)), y] += 0.4
        probs.append(posthoc.softmax(logits.astype(np.float32)))
    source = r.dirichlet(np.ones(classes)).astype(np.float32)
    G, h = _bbse_quadratic(probs[0], calib_y, probs[1], source, ridge)
    expected = _simplex_minimum_by_enumeration(G, h)
    est, _, fell_back = prior_shift.bbse_prior(probs[0], calib_y, probs[1], source, ridge=ridge, cond_limit=1e12)
    assert not fell_back
    np.testing.assert_allclose(est, expected, atol=1e-6)


def test_bbse_ridge_shrinks_towards_no_shift():
    kw = dict(calib_logits=CAL_LOGITS, calib_labels=CAL_Y, method="bbse")
    free, mild, strong = (prior_shift.adapt(TEST_LOGITS, PS, ridge=r, **kw).prior for r in (0.0, 1.0, 1e4))
    dist = [np.abs(p - PS).sum() for p in (free, mild, strong)]
    assert dist[0] > dist[1] > dist[2] and dist[2] < 0.01


def _rlls_problem(calib_probs, calib_y, test_probs):
    """A (the joint soft confusion, [i, j] = P(pred i, y j)), mu and p_cal of RLLS, in float64 from the
    definitions."""
    classes = calib_probs.shape[1]
    joint = np.zeros((classes, classes))
    np.add.at(joint.T, calib_y, calib_probs.astype(np.float64))
    joint /= len(calib_y)
    return joint, test_probs.astype(np.float64).mean(0), np.bincount(calib_y, minlength=classes) / len(calib_y)


def _rlls_bound(classes, m, delta=0.05):
    log_term = np.log(2 * classes / delta)
    return 3 * (2 * log_term / (3 * m) + np.sqrt(2 * log_term / m))


def _weak_classifier_draw(seed, classes=8):
    r = np.random.default_rng(seed)
    calib_y = np.repeat(np.arange(classes), 40).astype(np.int64)
    target = r.dirichlet(np.full(classes, 0.5))
    test_y = r.choice(classes, 400, p=target)
    probs = []
    for y in (calib_y, test_y):
        logits = r.normal(size=(len(y), classes))
        logits[np.arange(len(y)), y] += 1.0
        probs.append(posthoc.softmax(logits.astype(np.float32)))
    return probs[0], calib_y, probs[1]


@pytest.mark.parametrize("reg", [0.003, 0.01, 0.03])
@pytest.mark.parametrize("seed", range(6))
def test_rlls_solves_its_norm_problem(seed, reg):
    """The weights minimise |A w - mu| + rho |w - 1| over w >= 0: against scipy's SLSQP on the same
    objective, from the definitions in float64, and never a worse objective than the reference."""
    optimize = pytest.importorskip("scipy.optimize")
    calib, calib_y, test = _weak_classifier_draw(seed)
    A, mu, p_cal = _rlls_problem(calib, calib_y, test)
    est, rho = prior_shift.rlls_prior(calib, calib_y, test, reg=reg)
    assert rho == pytest.approx(reg * _rlls_bound(8, len(calib_y)), rel=1e-12)

    def objective(w):
        return np.linalg.norm(A @ w - mu) + rho * np.linalg.norm(w - 1)

    def gradient(w):
        r, d = A @ w - mu, w - 1
        return A.T @ r / max(np.linalg.norm(r), 1e-300) + rho * d / max(np.linalg.norm(d), 1e-300)

    ref = optimize.minimize(objective, np.ones(8), jac=gradient, bounds=[(0, None)] * 8, method="SLSQP",
                            options={"ftol": 1e-14, "maxiter": 2000})
    assert ref.success, ref.message
    expected = ref.x * p_cal / (ref.x * p_cal).sum()
    np.testing.assert_allclose(est, expected, atol=2e-4)
    # lade's weights, up to the scale its normalisation removed, are as good to float32 precision: the best scale of
    # est / p_cal is found by a 1-D search
    w = est / p_cal
    scale = optimize.minimize_scalar(lambda t: objective(t * w), bounds=(0.1, 10), method="bounded",
                                     options={"xatol": 1e-12}).x
    assert objective(scale * w) <= ref.fun * (1 + 1e-6)  # the prior is float32


def test_rlls_ends_between_least_squares_and_no_shift():
    """reg = 0 is non-negative least squares on the weights (scipy's nnls); a penalty beyond
    |A^T b| / |b| (b = mu - A 1) leaves no shift, the calibration label frequencies; between, the estimate
    moves monotonically from one to the other."""
    optimize = pytest.importorskip("scipy.optimize")
    calib, calib_y, test = _weak_classifier_draw(3)
    A, mu, p_cal = _rlls_problem(calib, calib_y, test)
    w = optimize.nnls(A, mu)[0]
    np.testing.assert_allclose(prior_shift.rlls_prior(calib, calib_y, test, reg=0.0)[0],
                               np.maximum(w * p_cal / (w * p_cal).sum(), 1e-8), atol=1e-6)
    b = mu - A.sum(1)
    no_shift = np.linalg.norm(A.T @ b) / np.linalg.norm(b) / _rlls_bound(8, len(calib_y))
    np.testing.assert_allclose(prior_shift.rlls_prior(calib, calib_y, test, reg=1.001 * no_shift)[0], p_cal,
                               atol=1e-7)
    distances = [np.abs(prior_shift.rlls_prior(calib, calib_y, test, reg=f * no_shift)[0] - p_cal).sum()
                 for f in (0.0, 0.1, 0.3, 0.6, 0.9, 0.999)]
    assert all(a > b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] > 0  # just below the threshold, still a shift


def test_rlls_estimator_and_its_errors():
    res = prior_shift.RLLS().fit(CAL_LOGITS, CAL_Y, PS).adapt(TEST_LOGITS)
    assert np.abs(res.prior - PT).max() <= 0.03 and res.method == "rlls"
    assert res.rho == pytest.approx(0.01 * _rlls_bound(C, len(CAL_Y)))
    assert res.shift_test["p_value"] < 1e-10
    np.testing.assert_allclose(res.probs.sum(1), 1, atol=1e-5)
    hard = prior_shift.RLLS(soft=False).fit(CAL_LOGITS, CAL_Y, PS).estimate(TEST_LOGITS)
    assert np.abs(hard.prior - PT).max() <= 0.03
    with pytest.raises(ValueError, match=r"lade.prior_shift.RLLS: argument 'reg' must be .*got -1"):
        prior_shift.RLLS(reg=-1)
    with pytest.raises(ValueError, match=r"lade.prior_shift.RLLS: argument 'delta' must be .*got 1.5"):
        prior_shift.RLLS(delta=1.5)
    with pytest.raises(ValueError, match=r"lade.prior_shift.RLLS.fit: argument 'calib_logits' is required"):
        prior_shift.RLLS().fit(None, None, PS)
    calib, calib_y, test = _weak_classifier_draw(0)
    with pytest.raises(ValueError, match=r"lade.prior_shift.rlls_prior: argument 'delta' must be in \(0, 1\)"):
        prior_shift.rlls_prior(calib, calib_y, test, delta=0.0)
    with pytest.raises(ValueError, match=r"lade.prior_shift.rlls_prior: argument 'calib_labels': .* outside \[0, 8\)"):
        prior_shift.rlls_prior(calib, calib_y + 8, test)


def test_em_reference_is_the_mean_calibrated_posterior():
    # logits with a class offset that temperature scaling cannot remove: the posteriors do not embody
    # PS, but their mean over the calibration rows is the prior they do embody, so on data without
    # shift EM stays there (with PS as reference it would report a spurious shift)
    off = np.array([0.8, 0, -0.5, 0, 0.3], np.float32)
    same, _ = draw(PS, 20000, 11)
    res = prior_shift.adapt(same + off, PS, calib_logits=CAL_LOGITS + off, calib_labels=CAL_Y, calibration="ts", family="free")
    expected = posthoc.softmax((CAL_LOGITS + off) / res.calibration.temperature).mean(0)
    np.testing.assert_allclose(res.reference_prior, expected, atol=1e-5)
    assert np.abs(res.prior - res.reference_prior).max() < 0.02
    assert np.abs(PS - res.reference_prior).max() > 0.05


def test_em_pseudo_count_keeps_absent_classes_positive():
    absent = np.array([0.5, 0.3, 0.2, 0.0, 0.0], np.float32)
    logits, _ = draw(absent, 3000, 5)
    mle = prior_shift.adapt(logits, PS, method="em", calibration="none", pseudo_count=0.0, family="free")
    mapped = prior_shift.adapt(logits, PS, method="em", calibration="none", pseudo_count=2.0, family="free")
    default = prior_shift.adapt(logits, PS, method="em", calibration="none", family="free")  # add-one smoothing
    floor = 2.0 / (3000 + C * 2.0)
    assert mapped.prior[3:].min() >= floor * 0.999 and mle.prior[3:].min() < floor
    assert default.prior[3:].min() >= 1.0 / (3000 + C) * 0.999
    assert np.abs(mapped.prior - absent).max() <= 0.03
    # the shift test uses the maximum-likelihood estimate either way
    assert mapped.shift_test["statistic"] == pytest.approx(mle.shift_test["statistic"], rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="argument 'source_prior' must sum to 1"):
        prior_shift.adapt(TEST_LOGITS, PS * 0.5, family="free")
    with pytest.raises(ValueError, match="argument 'calib_logits' is required"):
        prior_shift.adapt(TEST_LOGITS, PS, method="bbse")
    with pytest.raises(ValueError, match="argument 'calib_labels' must have shape"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y[:-1], family="free")
    with pytest.raises(ValueError, match="argument 'test_logits' must have shape"):
        prior_shift.adapt(TEST_LOGITS[:, :4], PS, family="free")
    bad = TEST_LOGITS.copy()
    bad[5, 2] = np.nan
    with pytest.raises(FloatingPointError,
                       match=r"adapt: argument 'test_logits' has a non-finite value nan at \[5, 2\]"):
        prior_shift.adapt(bad, PS, family="free")
    y = CAL_Y.copy()
    y[y == 3] = 2
    with pytest.raises(ValueError, match="argument 'calib_labels' must contain every class"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=y, family="free")
    y[0] = 9
    with pytest.raises(ValueError, match=r"labels\[0\] = 9"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=y, method="bbse", calibration="none")
    with pytest.raises(ValueError, match="argument 'method'"):
        prior_shift.adapt(TEST_LOGITS, PS, method="mle", family="free")
    with pytest.raises(ValueError, match="adapt: argument 'pseudo_count' must be finite and >= 0"):
        prior_shift.adapt(TEST_LOGITS, PS, pseudo_count=-1, family="free")
    with pytest.raises(ValueError, match="adapt: argument 'ridge' must be finite and >= 0"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y, method="bbse", ridge=np.nan)


# ---- real data, no cache: a linear softmax classifier on 8x8-pooled CIFAR-100 pixels -------------
# Four visually distinct coarse classes (flowers, large natural outdoor scenes, people, vehicles 1),
# long-tailed 2500 -> 25 (imbalance 100); every fifth long-tailed sample is the labelled calibration
# set (500, 108, 23, 5 samples). The linear model is weak but informative (about 45% balanced test
# accuracy, confusion condition number 70), so the target prior is identifiable from its
# predictions. About 10-20 s, most of it reading the archive.
REAL_CLASSES = [2, 10, 14, 18]


@pytest.fixture(scope="module")
def linear_logits(cifar100):
    import torch

    def pick(split):
        x, _, coarse = cifar100[split]
        keep = np.isin(coarse, REAL_CLASSES)
        return x[keep], np.searchsorted(REAL_CLASSES, coarse[keep]).astype(np.int64)

    (train_x, train_y), (test_x, test_y) = pick("train"), pick("test")
    subset = lade.sampling.lt_subset(train_y, lade.priors.lt_profile(len(REAL_CLASSES), 2500, 0.01), seed=0)
    held = np.zeros(len(subset.indices), bool)
    held[::5] = True
    fit, cal = subset.indices[~held], subset.indices[held]

    def features(x):
        return x.astype(np.float32).reshape(len(x), 3, 8, 4, 8, 4).mean(axis=(3, 5)).reshape(len(x), -1) / 255.0

    xf = features(train_x[fit])
    mean, std = xf.mean(0), xf.std(0) + 1e-3
    X = torch.tensor((xf - mean) / std)
    Y = torch.tensor(train_y[fit])
    W = torch.zeros(X.shape[1], len(REAL_CLASSES), requires_grad=True)
    b = torch.zeros(len(REAL_CLASSES), requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X @ W + b, Y) + 1e-3 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def logits(x):
        with torch.no_grad():
            return np.ascontiguousarray((torch.tensor((features(x) - mean) / std) @ W + b).numpy())

    return {"prior": lade.priors.prior_from_labels(train_y[fit], len(REAL_CLASSES)),
            "test": (logits(test_x), test_y), "calib": (logits(train_x[cal]), train_y[cal])}


@pytest.mark.parametrize("ratio,direction", [(50, "backward"), (10, "backward"), (10, "forward"), (50, "forward")])
def test_real_linear_model_estimated_prior_is_close_to_oracle(linear_logits, ratio, direction):
    prior = linear_logits["prior"]
    logits, labels = linear_logits["test"]
    sub = lade.sampling.shifted_test_subset(labels, prior, ratio, direction)
    z, y = logits[sub.indices], labels[sub.indices]
    none = lade.metrics.accuracy(z, y)
    oracle = lade.metrics.accuracy(lade.posthoc.pc_adjust(z, prior, sub.prior), y)
    cal_z, cal_y = linear_logits["calib"]
    for method in ("em", "bbse"):
        res = prior_shift.adapt(z, prior, calib_logits=cal_z, calib_labels=cal_y, method=method, family="free")
        estimated = lade.metrics.accuracy(res.probs, y)
        assert not res.fell_back and res.condition_number < 200
        # BBSE (observed: at or above the oracle on all four) needs only the confusion matrix; EM needs
        # posteriors calibrated per sample, and with 5 calibration samples of the tail class they are
        # not: on backward-50, where that class is 73% of the test set, EM stays ~7 points short
        slack = 0.1 if method == "em" and direction == "backward" else 0.02
        assert estimated >= oracle - slack, (method, none, oracle, estimated)
        if direction == "backward":
            assert estimated >= none + 0.35, (method, none, oracle, estimated)


def test_em_with_a_class_missing_from_the_held_out_set_says_which():
    keep = CAL_Y != 0
    with pytest.warns(RuntimeWarning, match=r"no sample of class\(es\) 0"):
        res = prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS[keep], calib_labels=CAL_Y[keep],
                                calibration="ts", family="free")
    assert np.isinf(res.condition_number) and np.isfinite(res.prior).all()


# ---- gate, shrinkage, few labels (issue 10 §3) ---------------------------------------------------
# Tolerances are L1 distances between estimated and true prior, averaged over seeds; each figure
# below was measured with the current code and the bound set with room for sampling noise.

def _dirichlet_prior(seed, concentration):
    return np.random.default_rng(seed).dirichlet(concentration).astype(np.float32)


def _quiet_adapt(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # EM may stop at max_iter on 30-row samples
        return prior_shift.adapt(*args, **{"family": "free", **kw})


ESTIMATORS = {  # name -> the estimator (fitted on the calibration data in every test)
    "em": lambda: prior_shift.EM(),
    "em_gated": lambda: prior_shift.Gated(prior_shift.EM()),
    "em_shrunk": lambda: prior_shift.Shrunk(prior_shift.EM()),
    "bbse": lambda: prior_shift.BBSE(),
    "bbse_gated": lambda: prior_shift.Gated(prior_shift.BBSE()),
    "bbse_shrunk": lambda: prior_shift.Shrunk(prior_shift.BBSE()),
    "em_family": lambda: prior_shift.AutoFamilyEM(),
    "em_family_gated": lambda: prior_shift.Gated(prior_shift.AutoFamilyEM()),
    "rlls": lambda: prior_shift.RLLS(),
    "rlls_gated": lambda: prior_shift.Gated(prior_shift.RLLS()),
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_estimator_recovers_dirichlet_priors(name):
    # 10 Dirichlet(1) priors, 5000 test rows each: L1 error <= 0.08 on average and <= 0.15 for each
    errors = []
    for seed in range(10):
        pt = _dirichlet_prior(seed, np.ones(C))
        z, _ = draw(pt, 5000, 100 + seed)
        res = ESTIMATORS[name]().fit(CAL_LOGITS, CAL_Y, PS).adapt(z)
        errors.append(np.abs(res.prior - pt).sum())
    assert np.mean(errors) <= 0.08 and max(errors) <= 0.15, errors


def _balanced_pool(per_class, seed):
    z, y = draw(np.full(C, 1.0 / C, np.float32), per_class * C * 2, seed)
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(C)])
    keep.sort()
    return z[keep], y[keep]


@pytest.mark.parametrize("ratio,direction", [(50, "forward"), (10, "forward"), (1, "uniform"), (10, "backward"),
                                             (50, "backward")])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_every_estimator_recovers_the_spec_shifts(name, ratio, direction):
    # spec §2.3 subsets of a balanced pool of 1000 per class, ranked by PS: L1 error <= 0.06
    z, y = _balanced_pool(1000, 21)
    sub = lade.sampling.shifted_test_subset(y, PS, ratio, direction)
    res = ESTIMATORS[name]().fit(CAL_LOGITS, CAL_Y, PS).adapt(np.ascontiguousarray(z[sub.indices]))
    # PS is not exponential in rank, so these shifts lie near the tilted family PS^g but not on it; with
    # 2,000-5,000 rows the family test does not always see that, and the tilted fit's bias shows
    # (measured: L1 0.062 at F10, 0.073 at B50, where the free estimate has 0.039 and 0.022)
    limit = 0.08 if "family" in name else 0.06
    assert np.abs(res.prior - sub.prior).sum() <= limit, (res.prior, sub.prior)
    if direction != "uniform":
        assert not res.gated  # strong shifts are adapted to


@pytest.mark.parametrize("method,calibrated", [("em", False), ("em", True), ("bbse", True)])
def test_gate_false_positive_rate_is_near_its_level(method, calibrated):
    # 200 unshifted test sets of 2000 rows (and fresh calibration sets of 2000): the gate should adapt
    # on about 5% of them. Measured: EM 0.045 (exact posteriors) / 0.055 (BCTS), BBSE 0.07.
    adapted = 0
    for seed in range(200):
        z, _ = draw(PS, 2000, 1000 + seed)
        kw = dict(method=method, calibration="none")
        if calibrated:
            cz, cy = draw(PS, 2000, 5000 + seed)
            kw = dict(method=method, calib_logits=cz, calib_labels=cy)
        res = _quiet_adapt(z, PS, **kw)
        adapted += not res.gated
        if res.gated:
            np.testing.assert_array_equal(res.prior, res.reference_prior)
            np.testing.assert_allclose(res.probs, posthoc.softmax(z) if not calibrated else res.calibration(z),
                                       atol=1e-6)
    assert 0.01 <= adapted / 200 <= 0.10, adapted


def test_gate_level_is_a_parameter():
    z, _ = draw(np.array([0.35, 0.25, 0.17, 0.13, 0.10], np.float32), 2000, 3)  # a mild shift
    p = prior_shift.adapt(z, PS, calibration="none", gate=None, family="free").shift_test["p_value"]
    assert 1e-6 < p < 0.5
    assert prior_shift.adapt(z, PS, calibration="none", gate=p / 2, family="free").gated
    assert not prior_shift.adapt(z, PS, calibration="none", gate=min(2 * p, 0.99), family="free").gated
    assert prior_shift.GATE_LEVEL == 0.05


@pytest.mark.parametrize("method", ["em", "bbse"])
def test_shrinkage_reduces_error_at_small_sample_sizes(method):
    # target priors near the training prior (Dirichlet(200 PS)), 30 and 100 test rows, 100 seeds.
    # Measured L1 (EM: 0.30 -> 0.11 at 30 rows, 0.19 -> 0.11 at 100; BBSE 0.37 -> 0.14, 0.20 -> 0.12).
    # Far from the anchor (Dirichlet(1)) shrinkage costs a little at 30 rows (EM 0.30 -> 0.45 with
    # add-one smoothing, BBSE 0.34 -> 0.35) and nothing measurable from 1000 rows on.
    for n in (30, 100):
        plain, shrunk = [], []
        for seed in range(100):
            pt = _dirichlet_prior(seed, 200 * PS)
            z, _ = draw(pt, n, seed + 10)
            kw = dict(calib_logits=CAL_LOGITS[:2000], calib_labels=CAL_Y[:2000], method=method, gate=None,
                      family="free" if method == "em" else None)
            plain.append(np.abs(_quiet_adapt(z, PS, **kw).prior - pt).sum())
            res = _quiet_adapt(z, PS, shrink_to="no_shift", **kw)
            shrunk.append(np.abs(res.prior - pt).sum())
            assert 0 <= res.shrink_weight <= 1
            expected = res.shrink_weight * res.reference_prior + (1 - res.shrink_weight) * res.unshrunk_prior
            np.testing.assert_allclose(res.prior, expected, atol=1e-6)
        assert np.mean(shrunk) <= 0.75 * np.mean(plain), (n, np.mean(plain), np.mean(shrunk))


def test_shrinkage_weight_follows_the_uncertainty():
    # more rows, smaller covariance, smaller weight; uniform anchor is honoured
    z, _ = draw(PT, 20000, 4)
    small = prior_shift.adapt(z[:200], PS, method="em", calibration="none", gate=None, shrink_to="uniform", family="free")
    large = prior_shift.adapt(z, PS, method="em", calibration="none", gate=None, shrink_to="uniform", family="free")
    assert small.covariance_trace > 50 * large.covariance_trace
    assert 0 < large.shrink_weight < small.shrink_weight < 1
    uniform = np.full(C, 0.2, np.float32)
    np.testing.assert_allclose(large.prior, large.shrink_weight * uniform + (1 - large.shrink_weight)
                               * large.unshrunk_prior, atol=1e-6)
    # the Fisher trace matches the spread of the estimate over repeated samples (within 30%)
    spread = [prior_shift.adapt(draw(PT, 2000, 50 + s)[0], PS, method="em", calibration="none", gate=None,
                                pseudo_count=0, family="free").prior for s in range(60)]
    empirical = np.var(np.array(spread), axis=0).sum()
    fisher = prior_shift.adapt(z[:2000], PS, method="em", calibration="none", gate=None, pseudo_count=0,
                               shrink_to="uniform", family="free").covariance_trace
    assert fisher == pytest.approx(empirical, rel=0.3)


def _split_labelled(y, k, design, seed):
    if design == "per_class":
        lab = np.concatenate([np.flatnonzero(y == c)[:k] for c in range(C)])
    else:
        lab = np.random.default_rng(seed).choice(len(y), size=k * C, replace=False)
    rest = np.setdiff1d(np.arange(len(y)), lab)
    return rest, np.bincount(y[lab], minlength=C).astype(np.int64)


@pytest.mark.parametrize("design", ["per_class", "random"])
def test_few_label_em_is_at_least_as_close_as_unlabelled_em(design):
    # 100 Dirichlet(1) priors, 300 target rows; error against the set's label frequencies.
    # Measured L1: unlabelled 0.080; k=1 0.079 / 0.078; k=5 0.076 / 0.075 (per_class / random)
    errors = {0: [], 1: [], 5: []}
    for seed in range(100):
        z, y = draw(_dirichlet_prior(seed, np.ones(C)), 300, seed + 10)
        truth = np.bincount(y, minlength=C) / len(y)
        errors[0].append(np.abs(_quiet_adapt(z, PS, calibration="none", gate=None).prior - truth).sum())
        for k in (1, 5):
            rest, counts = _split_labelled(y, k, design, seed)
            res = _quiet_adapt(np.ascontiguousarray(z[rest]), PS, calibration="none", gate=None,
                               labelled_counts=counts, labelled_design=design)
            errors[k].append(np.abs(res.prior - truth).sum())
    mean = {k: np.mean(v) for k, v in errors.items()}
    assert mean[5] <= mean[0] and mean[5] <= 0.1, mean


def test_few_label_em_designs_follow_their_derivation():
    z, y = draw(PT, 4000, 8)
    rest, counts = _split_labelled(y, 5, "per_class", 0)
    zr = np.ascontiguousarray(z[rest])
    plain = prior_shift.adapt(zr, PS, calibration="none", gate=None, pseudo_count=0, family="free")
    per_class = prior_shift.adapt(zr, PS, calibration="none", gate=None, pseudo_count=0, labelled_counts=counts, family="free")
    # per_class: the unlabelled rows' prior is plain EM on them; the target's adds the counts
    np.testing.assert_allclose(per_class.pool_prior, plain.prior, atol=1e-6)
    np.testing.assert_allclose(per_class.prior, (len(rest) * plain.prior + counts) / (len(rest) + counts.sum()),
                               atol=1e-6)
    np.testing.assert_allclose(per_class.probs, plain.probs, atol=1e-6)
    # random: the fixed point of p = (sum_i r_i(p) + counts) / (n + total)
    rnd = prior_shift.adapt(zr, PS, calibration="none", gate=None, pseudo_count=0, labelled_counts=counts,
                            labelled_design="random", family="free")
    r = posthoc.softmax(zr - np.log(PS) + np.log(rnd.prior))
    np.testing.assert_allclose(rnd.prior, (r.sum(0) + counts) / (len(rest) + counts.sum()), atol=1e-5)
    np.testing.assert_array_equal(rnd.pool_prior, rnd.prior)
    # labels alone (every row labelled but one) give the label frequencies
    many = np.bincount(y[1:], minlength=C).astype(np.int64)
    res = prior_shift.adapt(z[:1], PS, calibration="none", gate=None, labelled_counts=many, labelled_design="random", family="free")
    assert np.abs(res.prior - many / many.sum()).max() < 2e-3


def test_new_arguments_are_validated():
    kw = dict(calib_logits=CAL_LOGITS, calib_labels=CAL_Y)
    for gate in (0, 1, 1.5, "0.05", np.nan, True):
        with pytest.raises(ValueError, match="adapt: argument 'gate' must be None or a level in"):
            prior_shift.adapt(TEST_LOGITS, PS, gate=gate, family="free")
    with pytest.raises(ValueError, match="adapt: argument 'shrink_to' must be None, 'no_shift' or 'uniform'"):
        prior_shift.adapt(TEST_LOGITS, PS, shrink_to="source", family="free")
    with pytest.raises(ValueError, match="adapt: argument 'labelled_design' must be 'per_class' or 'random'"):
        prior_shift.adapt(TEST_LOGITS, PS, labelled_counts=np.ones(C, np.int64), labelled_design="stratified", family="free")
    with pytest.raises(ValueError, match=r"adapt: argument 'labelled_counts' must be an int64 array of shape \(5,\)"):
        prior_shift.adapt(TEST_LOGITS, PS, labelled_counts=np.ones(4, np.int64), family="free")
    with pytest.raises(ValueError, match="adapt: argument 'labelled_counts' must be an int64 array"):
        prior_shift.adapt(TEST_LOGITS, PS, labelled_counts=[1, 1, 1, 1, 1], family="free")
    with pytest.raises(ValueError, match=r"adapt: argument 'labelled_counts': labelled_counts\[2\] = -1 must be >= 0"):
        prior_shift.adapt(TEST_LOGITS, PS, labelled_counts=np.array([1, 1, -1, 1, 1], np.int64), family="free")
    with pytest.raises(ValueError, match="adapt: argument 'labelled_counts' does not apply to BBSE"):
        prior_shift.adapt(TEST_LOGITS, PS, method="bbse", labelled_counts=np.ones(C, np.int64), **kw)
    with pytest.raises(ValueError, match="adapt: argument 'shrink_to' needs an estimator with an uncertainty model .* LabelledEM"):
        prior_shift.adapt(TEST_LOGITS, PS, labelled_counts=np.ones(C, np.int64), shrink_to="uniform", family="free")


@pytest.mark.parametrize("design", ["per_class", "random"])
@pytest.mark.parametrize("ratio,direction", [(50, "forward"), (1, "uniform"), (50, "backward")])
def test_few_label_em_recovers_the_spec_shifts(design, ratio, direction):
    # spec §2.3 subsets of a balanced pool of 1000 per class, 5 labels per class: L1 error <= 0.06
    z, y = _balanced_pool(1000, 21)
    sub = lade.sampling.shifted_test_subset(y, PS, ratio, direction)
    z, y = z[sub.indices], y[sub.indices]
    rest, counts = _split_labelled(y, 5, design, 0)
    res = prior_shift.adapt(np.ascontiguousarray(z[rest]), PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y,
                            gate=None, labelled_counts=counts, labelled_design=design, family="free")
    assert np.abs(res.prior - sub.prior).sum() <= 0.06, (res.prior, sub.prior)


@pytest.mark.parametrize("method", ["em", "bbse"])
def test_shrinkage_with_bootstrap_uses_the_replicates_width(method):
    z, _ = draw(PT, 400, 9)
    res = prior_shift.adapt(z, PS, calib_logits=CAL_LOGITS[:2000], calib_labels=CAL_Y[:2000], method=method,
                            gate=None, shrink_to="no_shift", bootstrap=40, seed=2, family="free")
    assert res.covariance_trace == pytest.approx(np.var(res.replicates.astype(np.float64), axis=0).sum(), rel=1e-5)
    assert 0 < res.shrink_weight < 1
    d2 = ((res.unshrunk_prior.astype(np.float64) - res.reference_prior) ** 2).sum()
    assert res.shrink_weight == pytest.approx(res.covariance_trace / d2, rel=1e-5)


def test_squarem_em_reaches_the_fixed_point_of_plain_em_in_fewer_maps():
    rng = np.random.default_rng(3)
    classes = 50
    source = priors.prior_from_counts(priors.lt_profile(classes, 100, 0.05))
    y = rng.integers(0, classes, 3000)
    z = rng.normal(size=(3000, classes)).astype(np.float32)
    z[np.arange(3000), y] += 1.5
    probs = posthoc.softmax(z + np.log(source))
    for pseudo in (1.0, 0.0):
        plain, it_plain, conv_plain, ll_plain = prior_shift.em_prior(probs, source, pseudo_count=pseudo, tol=1e-10,
                                                                     max_iter=20000)
        fast, it_fast, conv_fast, ll_fast = prior_shift.em_prior(probs, source, pseudo_count=pseudo, tol=1e-10,
                                                                 max_iter=20000, accelerate=True)
        assert conv_plain and conv_fast
        np.testing.assert_allclose(fast, plain, atol=2e-6)
        assert ll_fast == pytest.approx(ll_plain, abs=1e-6 * abs(ll_plain) + 1e-6)
        assert it_fast < it_plain / 2, (it_fast, it_plain)


# ---- the tilted family p_g ∝ r * t^g (family='tilt' / 'auto') -------------------------------------------

def _tilted(g, reference=PS, direction=PS):
    p = reference.astype(np.float64) * direction.astype(np.float64) ** g
    return (p / p.sum()).astype(np.float32)


def test_tilted_prior_maximises_the_likelihood_in_its_family():
    probs = posthoc.softmax(TEST_LOGITS[:3000])
    t = np.array([0.5, 0.05, 0.2, 0.15, 0.1], np.float32)  # a direction that is not the reference
    prior, g, loglik, iterations, converged = prior_shift.tilted_prior(probs, PS, t)
    assert converged and iterations < 30
    q = probs.astype(np.float64)
    ll = lambda h: np.log((q * (_tilted(h, PS, t) / PS)).sum(1)).sum()  # noqa: E731
    grid = np.linspace(-4, 4, 8001)
    best = grid[np.argmax([ll(h) for h in grid])]
    assert g == pytest.approx(best, abs=2e-3)
    assert loglik == pytest.approx(ll(g), rel=1e-4) and loglik >= max(ll(best), ll(0)) - 1e-3
    np.testing.assert_allclose(prior, _tilted(g, PS, t), rtol=1e-5)


@pytest.mark.parametrize("g", [-3.0, -1.0, 1.0])
def test_family_auto_takes_the_tilt_on_the_family(g):
    # exact posteriors (no calibration): a target on the family is estimated with one parameter,
    # closer than the free estimate, and its shift test has 1 dof
    pt = _tilted(g)
    z, _ = draw(pt, 2000, 40)
    free = prior_shift.adapt(z, PS, calibration="none", gate=None, family="free")
    auto = prior_shift.adapt(z, PS, calibration="none", gate=None, family="auto")
    assert auto.family == "tilt" and auto.family_test["dof"] == C - 2 and auto.family_test["p_value"] >= 0.05
    assert auto.tilt_exponent == pytest.approx(g, abs=0.15)
    assert np.abs(auto.prior - pt).sum() < np.abs(free.prior - pt).sum()
    assert auto.shift_test["dof"] == 1 and auto.shift_test["p_value"] < 1e-6
    tilt = prior_shift.adapt(z, PS, calibration="none", gate=None, family="tilt")
    np.testing.assert_array_equal(tilt.prior, auto.prior)


def test_family_auto_falls_back_to_the_free_estimate_off_the_family():
    pt = np.array([0.1, 0.4, 0.05, 0.3, 0.15], np.float32)  # not monotone in PS
    z, _ = draw(pt, 5000, 41)
    free = prior_shift.adapt(z, PS, calibration="none", gate=None, family="free",
                             pseudo_count=prior_shift.AUTO_PSEUDO_COUNT)
    auto = prior_shift.adapt(z, PS, calibration="none", gate=None, family="auto")
    assert auto.family == "free" and auto.family_test["p_value"] < 1e-6
    np.testing.assert_array_equal(auto.prior, free.prior)
    assert np.isfinite(auto.tilt_exponent)  # the family was fitted, then rejected


def test_family_test_rejects_a_true_tilt_at_about_its_level():
    # 200 test sets of 2000 rows drawn from a prior on the family: 'auto' should leave it for the free
    # estimate on about 5 % of them (chi-square with C - 2 dof). Measured: 9 of 200.
    pt, left = _tilted(-1.5), 0
    for seed in range(200):
        z, _ = draw(pt, 2000, 3000 + seed)
        left += prior_shift.adapt(z, PS, calibration="none", gate=None, family="auto").family == "free"
    assert 0.01 <= left / 200 <= 0.10, left


def test_family_balanced_training_leaves_one_prior():
    # a uniform direction (balanced training) makes the family the reference alone: g = 0, no shift
    uniform = np.full(C, 1.0 / C, np.float32)
    res = prior_shift.adapt(TEST_LOGITS, PS, calibration="none", family="tilt", tilt_prior=uniform)
    assert res.tilt_exponent == 0 and res.gated and res.shift_test["statistic"] == pytest.approx(0, abs=1e-3)


def test_family_arguments_are_validated():
    kw = dict(calib_logits=CAL_LOGITS, calib_labels=CAL_Y)
    with pytest.raises(ValueError, match="adapt: argument 'family' must be 'free', 'tilt', 'auto' or 'select', got 'tilted'"):
        prior_shift.adapt(TEST_LOGITS, PS, family="tilted")
    # a combination that cannot work is refused by the estimator it selects, by name
    for extra, message in ((dict(method="bbse"), "argument 'family' does not apply to BBSE"),
                           (dict(shrink_to="uniform"), "argument 'shrink_to' needs an estimator with an uncertainty "
                                                       "model .* AutoFamilyEM"),
                           (dict(bootstrap=10), "argument 'bootstrap' does not apply to AutoFamilyEM"),
                           (dict(labelled_counts=np.ones(C, np.int64)),
                            "argument 'labelled_counts' does not apply to AutoFamilyEM")):
        with pytest.raises(ValueError, match=f"adapt: {message}"):
            prior_shift.adapt(TEST_LOGITS, PS, family="auto", **kw, **extra)
    with pytest.raises(ValueError, match=r"adapt: argument 'tilt_prior' must have shape \(5,\) like source_prior"):
        prior_shift.adapt(TEST_LOGITS, PS, family="auto", tilt_prior=np.full(4, 0.25, np.float32))
    with pytest.raises(ValueError, match="tilted_prior: argument 'tilt_prior'"):
        prior_shift.tilted_prior(posthoc.softmax(TEST_LOGITS), PS, np.array([0.5, 0.5, 0, 0, 0], np.float32))


# ---- estimator objects ---------------------------------------------------------------------------------

def test_an_estimator_fitted_once_gives_what_adapt_gives():
    # the objects are what adapt runs: the same numbers, for every estimator adapt can select
    for kw, make in ((dict(family="free", gate=None), lambda: prior_shift.EM()),
                     (dict(family="free", gate=None, pseudo_count=0.0), lambda: prior_shift.EM(pseudo_count=0.0)),
                     (dict(), lambda: prior_shift.Gated(prior_shift.AutoFamilyEM())),
                     (dict(family="tilt", gate=None), lambda: prior_shift.TiltedEM()),
                     (dict(family="select"), lambda: prior_shift.Gated(prior_shift.SelectEM())),
                     (dict(family="free", pseudo_count="auto", shrink_to="uniform"),
                      lambda: prior_shift.Shrunk(prior_shift.Gated(prior_shift.EmpiricalBayesEM()), to="uniform")),
                     (dict(method="bbse", ridge=0.5, gate=None), lambda: prior_shift.BBSE(ridge=0.5))):
        est = make().fit(CAL_LOGITS[:3000], CAL_Y[:3000], PS)
        for seed in (1, 2):
            z, _ = draw(PT if seed == 1 else PS, 1500, 40 + seed)
            one_call = prior_shift.adapt(z, PS, CAL_LOGITS[:3000], CAL_Y[:3000], **kw)
            res = est.adapt(z)
            np.testing.assert_array_equal(res.prior, one_call.prior, err_msg=repr(est))
            np.testing.assert_array_equal(res.probs, one_call.probs, err_msg=repr(est))
            assert res.shift_test == one_call.shift_test and res.gated == one_call.gated
            estimate = est.estimate(z)
            assert estimate.probs is None
            np.testing.assert_array_equal(estimate.prior, res.prior)


def test_adapt_without_keywords_is_the_recommended_estimator():
    est = prior_shift.estimator()
    assert isinstance(est, prior_shift.Gated) and isinstance(est.estimator, prior_shift.AutoFamilyEM)
    assert est.level == prior_shift.GATE_LEVEL and est.estimator.pseudo_count == prior_shift.AUTO_PSEUDO_COUNT
    # pseudo_count=None: each estimator's own default, so the one-call form and the objects agree
    assert prior_shift.estimator(family="free", gate=None).pseudo_count == prior_shift.EM().pseudo_count == 1.0
    assert prior_shift.estimator(family="auto", gate=None).pseudo_count == prior_shift.AutoFamilyEM().pseudo_count
    assert prior_shift.estimator(family="free", pseudo_count=0.5).estimator.pseudo_count == 0.5
    res = prior_shift.adapt(TEST_LOGITS[:4000], PS, CAL_LOGITS[:4000], CAL_Y[:4000])
    assert np.abs(res.prior - PT).max() <= 0.03 and not res.gated and res.family in ("tilt", "free")


def test_combinations_that_cannot_work_are_refused_by_construction():
    with pytest.raises(ValueError, match="Shrunk: argument 'estimator' must have an uncertainty model .* TiltedEM"):
        prior_shift.Shrunk(prior_shift.TiltedEM())
    with pytest.raises(ValueError, match=r"Shrunk: argument 'estimator' must have an uncertainty model .* Gated\(LabelledEM\)"):
        prior_shift.Shrunk(prior_shift.Gated(prior_shift.LabelledEM()))
    prior_shift.Shrunk(prior_shift.Gated(prior_shift.BBSE()))  # a gate keeps the uncertainty model
    with pytest.raises(TypeError, match="Gated: argument 'estimator' must be a lade.prior_shift estimator, got dict"):
        prior_shift.Gated({"method": "em"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'bootstrap'"):
        prior_shift.SelectEM(bootstrap=10)
    with pytest.raises(ValueError, match=r"estimator: argument 'ridge' does not apply to EM \(family='free'\); it "
                                         r"takes bootstrap, calibration, .*pseudo_count, seed, soft, tol"):
        prior_shift.estimator(family="free", ridge=0.1)


def test_estimator_errors_name_the_object_and_method():
    with pytest.raises(ValueError, match="lade.prior_shift.EM: argument 'pseudo_count' must be finite and >= 0"):
        prior_shift.EM(pseudo_count=-1)
    with pytest.raises(ValueError, match="lade.prior_shift.Gated: argument 'level' must be in"):
        prior_shift.Gated(prior_shift.EM(), level=1.0)
    with pytest.raises(RuntimeError, match=r"lade.prior_shift.EM.estimate: the estimator is not fitted"):
        prior_shift.EM().estimate(TEST_LOGITS)
    with pytest.raises(ValueError, match="lade.prior_shift.BBSE.fit: argument 'calib_logits' is required"):
        prior_shift.BBSE().fit(None, None, PS)
    with pytest.raises(ValueError, match="lade.prior_shift.EM.fit: arguments 'calib_logits' and 'calib_labels' go "
                                         "together, got only calib_logits"):
        prior_shift.EM().fit(CAL_LOGITS, None, PS)
    bad = CAL_LOGITS[:100].copy()
    bad[3, 1] = np.nan
    with pytest.raises(FloatingPointError, match=r"lade.prior_shift.EM.fit: argument 'calib_logits' has a non-finite"):
        prior_shift.EM().fit(bad, CAL_Y[:100], PS)
    est = prior_shift.Gated(prior_shift.EM()).fit(CAL_LOGITS[:100], CAL_Y[:100], PS)
    with pytest.raises(FloatingPointError, match=r"lade.prior_shift.Gated.adapt: argument 'test_logits' has a non-finite"):
        est.adapt(bad)
    with pytest.raises(ValueError, match=r"lade.prior_shift.EM.estimate: argument 'test_logits' must have shape"):
        prior_shift.EM().fit(None, None, PS).estimate(np.zeros((4, 3), np.float32))
    with pytest.raises(TypeError, match=r"lade.prior_shift.Gated.estimate: unexpected argument 'labelled_counts'; "
                                        r"it takes test_logits$"):
        est.estimate(TEST_LOGITS[:10], labelled_counts=np.ones(C, np.int64))
    with pytest.raises(ValueError, match=r"LabelledEM.estimate: argument 'labelled_counts' must be an int64 array"):
        prior_shift.LabelledEM().fit(None, None, PS).estimate(TEST_LOGITS[:10], labelled_counts=[1, 2])


def test_labelled_em_object_takes_the_counts_per_target_set():
    est = prior_shift.LabelledEM(design="random", pseudo_count=0).fit(None, None, PS)
    counts = np.array([5, 5, 5, 5, 5], np.int64)
    res = est.adapt(TEST_LOGITS[:3000], labelled_counts=counts)
    one_call = prior_shift.adapt(TEST_LOGITS[:3000], PS, calibration="none", family="free", gate=None,
                                 pseudo_count=0, labelled_counts=counts, labelled_design="random")
    np.testing.assert_array_equal(res.prior, one_call.prior)
    assert np.abs(res.prior - PT).max() <= 0.03
