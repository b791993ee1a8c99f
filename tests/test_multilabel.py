"""Multi-label (independent sigmoid outputs): the per-label prior correction (lade.posthoc), label marginals
(lade.priors), the per-label EM and its one-call adaptation (lade.prior_shift) and the multi-label metrics
(lade.metrics), against float64 NumPy references and PyTorch, on synthetic data from a known calibrated model,
and their errors."""
import numpy as np
import pytest
import torch

from lade import metrics, posthoc, prior_shift, priors

rng = np.random.default_rng(0)
Z = (rng.normal(size=(40, 5)) * 4).astype(np.float32)
PS = np.array([0.1, 0.3, 0.5, 0.05, 0.8], np.float32)
PT = np.array([0.4, 0.1, 0.2, 0.3, 0.5], np.float32)


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)


def reference_adjust(z, ps, pt=None):
    return z.astype(np.float64) - logit(ps) + (0 if pt is None else logit(pt))


def torch_sigmoid(x):
    return torch.sigmoid(torch.tensor(x, dtype=torch.float64)).numpy()


# ---- post-hoc correction --------------------------------------------------------------------------------

def test_adjustment_matches_numpy_and_torch():
    np.testing.assert_allclose(posthoc.pc_adjust_multilabel(Z, PS, PT), reference_adjust(Z, PS, PT), rtol=1e-6,
                               atol=1e-5)
    np.testing.assert_allclose(posthoc.pc_adjust_multilabel(Z, PS), reference_adjust(Z, PS), rtol=1e-6, atol=1e-5)
    # balanced target: p_t = 0.5 given explicitly is the same as None
    np.testing.assert_array_equal(posthoc.pc_adjust_multilabel(Z, PS, np.full(5, 0.5, np.float32)),
                                  posthoc.pc_adjust_multilabel(Z, PS))
    np.testing.assert_allclose(posthoc.pc_sigmoid(Z, PS, PT), torch_sigmoid(reference_adjust(Z, PS, PT)), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(posthoc.sigmoid(Z), torch_sigmoid(Z), rtol=1e-6, atol=1e-7)
    # p_t == p_s is the identity up to rounding
    np.testing.assert_allclose(posthoc.pc_adjust_multilabel(Z, PS, PS), Z, atol=1e-5)


def test_out_and_in_place_as_pc_adjust():
    expected = posthoc.pc_adjust_multilabel(Z, PS, PT)
    out = np.empty_like(Z)
    assert posthoc.pc_adjust_multilabel(Z, PS, PT, out=out) is out
    np.testing.assert_array_equal(out, expected)
    inplace = Z.copy()
    assert posthoc.pc_adjust_multilabel(inplace, PS, PT, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, expected)
    inplace = Z.copy()
    assert posthoc.pc_sigmoid(inplace, PS, PT, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, posthoc.pc_sigmoid(Z, PS, PT))
    buf = np.concatenate([Z.ravel(), np.zeros(1, np.float32)])
    with pytest.raises(ValueError, match="share memory"):
        posthoc.pc_adjust_multilabel(buf[:-1].reshape(Z.shape), PS, out=buf[1:].reshape(Z.shape))


def test_extreme_logits_are_finite():
    z = np.array([[80, -80, 80, -80, 0]], np.float32)
    p = posthoc.pc_sigmoid(z, PS, PT)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p, torch_sigmoid(reference_adjust(z, PS, PT)), rtol=1e-6, atol=1e-30)
    q = posthoc.sigmoid(z)
    assert q[0, 1] > 0 and q[0, 0] == 1.0
    np.testing.assert_allclose(q, torch_sigmoid(z), rtol=1e-6, atol=1e-30)
    s = metrics.multilabel_summary(z, np.array([[0, 1, 1, 0, 1]], np.uint8))
    assert all(np.isfinite(s[k]) for k in ("nll", "brier", "accuracy"))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z, dtype=torch.float64),
                                                               torch.tensor([[0, 1, 1, 0, 1]], dtype=torch.float64),
                                                               reduction="none").numpy()[0]
    np.testing.assert_allclose(s["per_label"]["nll"], bce, rtol=1e-6, atol=1e-12)  # torch rounds log1p(e^-80) to 0


# ---- marginals from labels ------------------------------------------------------------------------------

def test_label_marginals():
    y = (rng.random((200, 4)) < [0.1, 0.5, 0.9, 0.3]).astype(np.uint8)
    np.testing.assert_allclose(priors.label_marginals(y), y.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(priors.label_marginals(y.astype(bool)), priors.label_marginals(y))
    np.testing.assert_allclose(priors.label_marginals(y, pseudo_count=1.0), (y.sum(0) + 1.0) / (200 + 2.0), rtol=1e-6)
    y[:, 1] = 0
    with pytest.raises(ValueError, match=r"lade.priors.label_marginals: argument 'targets': label 1 is never positive"):
        priors.label_marginals(y)
    y[:, 3] = 1
    with pytest.raises(ValueError, match="label 1 is never positive"):  # the first bad label is named
        priors.label_marginals(y)
    m = priors.label_marginals(y, pseudo_count=0.5)
    assert 0 < m[1] < m[3] < 1
    np.testing.assert_allclose(m[[1, 3]], [0.5 / 201, 200.5 / 201], rtol=1e-6)


# ---- per-label EM ---------------------------------------------------------------------------------------

def em_reference(q, ps, pseudo=0.0, tol=1e-8, max_iter=2000):
    """Float64 NumPy per-label EM, one label at a time, with the documented clamp."""
    q = q.astype(np.float64)
    n, L = q.shape
    out, its = np.empty(L), np.empty(L, int)
    for j in range(L):
        s, p = float(ps[j]), float(ps[j])
        for it in range(1, max_iter + 1):
            a = p / s * q[:, j]
            nxt = (np.sum(a / (a + (1 - p) / (1 - s) * (1 - q[:, j]))) + pseudo) / (n + 2 * pseudo)
            nxt = min(max(nxt, 1e-7), 1 - 1e-7)
            done, p = abs(nxt - p) < tol, nxt
            if done:
                break
        out[j], its[j] = p, it
    return out, its


def gaussian_data(n, prior, mu, ps, seed):
    """Per label j: y ~ Bernoulli(prior[j]), x | y ~ N(+mu_j, 1) or N(-mu_j, 1); the logits are the exact log
    posterior odds under the training marginals ps: logit(ps) + 2 mu x (a calibrated binary model)."""
    r = np.random.default_rng(seed)
    y = (r.random((n, len(prior))) < prior).astype(np.uint8)
    x = r.normal(size=y.shape) + np.where(y == 1, mu, -mu)
    return (logit(ps) + 2 * mu * x).astype(np.float32), y


def em_sd(p, mu, n):
    """The asymptotic standard deviation of the maximum-likelihood mixture weight p of N(mu, 1) and N(-mu, 1)
    from n rows: 1 / sqrt(n I), I = integral of (f1 - f0)^2 / (p f1 + (1 - p) f0) (the Fisher information)."""
    x = np.linspace(-12, 12, 48001)
    f1, f0 = np.exp(-0.5 * (x - mu) ** 2) / np.sqrt(2 * np.pi), np.exp(-0.5 * (x + mu) ** 2) / np.sqrt(2 * np.pi)
    info = np.sum((f1 - f0) ** 2 / (p * f1 + (1 - p) * f0)) * (x[1] - x[0])
    return 1 / np.sqrt(n * info)


MU = np.array([1.5, 1.0, 2.0, 1.2, 0.8])


def test_em_matches_a_float64_reference():
    z, _ = gaussian_data(3000, PT, MU, PS, seed=1)
    q = posthoc.sigmoid(z)
    for pseudo in (0.0, 1.0):
        est, its, conv, loglik = prior_shift.em_marginals(q, PS, pseudo_count=pseudo, tol=1e-10)
        ref, ref_its = em_reference(q, PS, pseudo, tol=1e-10)
        np.testing.assert_allclose(est, ref, rtol=1e-5, atol=1e-7)
        assert conv.dtype == bool and conv.all() and its.dtype == np.int32
        assert np.all(np.abs(its - ref_its) <= 2)  # the same maps, up to rounding at the tolerance
        e = est.astype(np.float64)
        ll = np.log(e / PS * q + (1 - e) / (1 - PS) * (1 - q)).sum(0)
        np.testing.assert_allclose(loglik, ll, rtol=1e-4, atol=1e-3)
    # one map from p_s is the mean probability
    est, its, conv, _ = prior_shift.em_marginals(q, PS, max_iter=1)
    np.testing.assert_allclose(est, q.astype(np.float64).mean(0), rtol=1e-6)
    assert (its == 1).all() and not conv.any()


def test_em_recovers_known_target_marginals_and_the_correction_helps():
    n = 20000
    z, y = gaussian_data(n, PT, MU, PS, seed=2)
    res = prior_shift.adapt_multilabel(z, PS, pseudo_count=0.0)
    sd = np.array([em_sd(p, m, n) for p, m in zip(PT, MU)])
    # the ML estimate is asymptotically normal around PT with sd from the Fisher information: 4 sd per label
    assert np.all(np.abs(res.marginals - PT) < 4 * sd), (res.marginals, PT, sd)
    assert res.converged.all() and np.all(2 * res.loglik > 20)  # every label's shift is detected
    np.testing.assert_allclose(res.probs, posthoc.pc_sigmoid(z, PS, res.marginals), atol=1e-7)
    np.testing.assert_array_equal(res.logits, posthoc.pc_adjust_multilabel(z, PS, res.marginals))
    before, after = metrics.multilabel_summary(z, y), metrics.multilabel_summary(res.logits, y)
    oracle = metrics.multilabel_summary(posthoc.pc_adjust_multilabel(z, PS, PT), y)
    assert after["nll"] < before["nll"] - 0.05 and after["brier"] < before["brier"]
    assert after["accuracy"] > before["accuracy"] + 0.02  # (F1 is not what the Bayes decision optimises: not checked)
    assert abs(after["accuracy"] - oracle["accuracy"]) < 0.005 and after["nll"] < oracle["nll"] + 0.005


def test_em_without_shift_stays_near_the_source():
    n = 20000
    z, _ = gaussian_data(n, PS, MU, PS, seed=3)
    est, _, conv, loglik = prior_shift.em_marginals(posthoc.sigmoid(z), PS)
    sd = np.array([em_sd(p, m, n) for p, m in zip(PS, MU)])
    assert conv.all() and np.all(np.abs(est - PS) < 4 * sd), (est, PS, sd)
    assert np.all(2 * loglik < 15)  # the 1-dof likelihood-ratio statistic: far below 15 (p = 1e-4) without shift


def test_em_gives_the_same_bits_on_one_thread_and_two():
    """Above 65,536 values the labels are split across the thread pool; each label is its own EM, so the
    result must not depend on the thread count."""
    import lade
    g = np.random.default_rng(3)
    probs = posthoc.sigmoid((g.normal(size=(5000, 40)) * 3).astype(np.float32))
    source = g.uniform(0.05, 0.6, 40).astype(np.float32)
    before = lade.get_num_threads()
    try:
        lade.set_num_threads(1)
        one = prior_shift.em_marginals(probs, source)
        lade.set_num_threads(2)
        two = prior_shift.em_marginals(probs, source)
    finally:
        lade.set_num_threads(before)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    assert one[2].all()


def test_adapt_multilabel_warns_when_a_label_has_not_converged():
    z, _ = gaussian_data(500, PT, MU, PS, seed=4)
    with pytest.warns(RuntimeWarning, match="lade.prior_shift.adapt_multilabel: EM did not converge"):
        res = prior_shift.adapt_multilabel(z, PS, max_iter=1)
    assert not res.converged.any()


# ---- metrics --------------------------------------------------------------------------------------------

def test_multilabel_summary_matches_torch_and_numpy():
    z, y = gaussian_data(500, PT, MU, PS, seed=5)
    y[:, 4] = 0
    z[:, 4] = -5  # a label neither present nor predicted: its F1 is undefined and left out of the macro-F1
    s = metrics.multilabel_summary(z, y.astype(bool))
    zt, yt = torch.tensor(z, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(zt, yt, reduction="none").mean(0).numpy()
    brier = ((torch.sigmoid(zt) - yt) ** 2).mean(0).numpy()
    pred = torch_sigmoid(z) >= 0.5
    acc = (pred == (y == 1)).mean(0)
    tp, fp, fn = (pred & (y == 1)).sum(0), (pred & (y == 0)).sum(0), (~pred & (y == 1)).sum(0)
    with np.errstate(invalid="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
    per = s["per_label"]
    np.testing.assert_allclose(per["nll"], bce, rtol=1e-6)
    np.testing.assert_allclose(per["brier"], brier, rtol=1e-6)
    np.testing.assert_array_equal(per["accuracy"], acc)
    np.testing.assert_allclose(per["f1"], f1, rtol=1e-12)
    assert np.isnan(per["f1"][4]) and s["macro_f1"] == pytest.approx(np.nanmean(f1), rel=1e-12)
    assert s["nll"] == pytest.approx(bce.mean(), rel=1e-6) and s["brier"] == pytest.approx(brier.mean(), rel=1e-6)
    assert s["accuracy"] == pytest.approx(acc.mean(), rel=1e-12)
    # another threshold
    s7 = metrics.multilabel_summary(z, y, threshold=0.7)
    np.testing.assert_array_equal(s7["per_label"]["accuracy"], ((torch_sigmoid(z) >= 0.7) == (y == 1)).mean(0))


# ---- errors ---------------------------------------------------------------------------------------------

Q = posthoc.sigmoid(Z)
Y = (Z > 0).astype(np.uint8)
ZERO = np.array([0.1, 0.3, 0.0, 0.05, 0.8], np.float32)
ONE = np.array([0.1, 1.0, 0.5, 0.05, 0.8], np.float32)
NAN = np.array([0.1, 0.3, 0.5, np.nan, 0.8], np.float32)
ADJ, SIG, LM = "lade.posthoc.pc_adjust_multilabel", "lade.posthoc.pc_sigmoid", "lade.priors.label_marginals"
EM, AD, MS = "lade.prior_shift.em_marginals", "lade.prior_shift.adapt_multilabel", "lade.metrics.multilabel_summary"


@pytest.mark.parametrize("call, error, func, message", [
    (lambda: posthoc.pc_adjust_multilabel(Z.astype(np.float64), PS), TypeError, ADJ,
     "argument 'logits' must have dtype float32, got float64"),
    (lambda: posthoc.pc_adjust_multilabel(Z, PS[:4]), ValueError, ADJ, "argument 'source_marginals' must have shape"),
    (lambda: posthoc.pc_adjust_multilabel(Z, ZERO), ValueError, ADJ,
     r"argument 'source_marginals': source_marginals\[2\] = 0, .*open interval \(0, 1\)"),
    (lambda: posthoc.pc_adjust_multilabel(Z, PS, ONE), ValueError, ADJ,
     r"argument 'target_marginals': target_marginals\[1\] = 1,"),
    (lambda: posthoc.pc_adjust_multilabel(Z, NAN), FloatingPointError, ADJ,
     r"argument 'source_marginals': source_marginals\[3\] = nan is not finite"),
    (lambda: posthoc.pc_adjust_multilabel(np.asfortranarray(Z), PS), ValueError, ADJ,
     "argument 'logits' must be C-contiguous"),
    (lambda: posthoc.pc_adjust_multilabel(np.zeros((0, 5), np.float32), PS), ValueError, ADJ,
     "argument 'logits' must have n >= 1 rows"),
    (lambda: posthoc.pc_adjust_multilabel(Z, "abcde"), TypeError, ADJ, "argument 'source_marginals'"),
    (lambda: posthoc.pc_sigmoid(Z, PS, ZERO), ValueError, SIG, r"argument 'target_marginals': target_marginals\[2\]"),
    (lambda: posthoc.pc_sigmoid(np.ascontiguousarray(Z[:, :4]), PS), ValueError, SIG, "argument 'source_marginals' must have shape"),
    (lambda: priors.label_marginals(Y.astype(np.int64)), TypeError, LM, "argument 'targets' must have dtype uint8"),
    (lambda: priors.label_marginals(Y * 2), ValueError, LM, r"argument 'targets' must hold 0 or 1, got 2 at"),
    (lambda: priors.label_marginals(np.zeros((0, 3), np.uint8)), ValueError, LM, "argument 'targets' must have n >= 1"),
    (lambda: priors.label_marginals(Y, pseudo_count=-1), ValueError, LM, "argument 'pseudo_count'"),
    (lambda: priors.label_marginals(np.asfortranarray(Y)), ValueError, LM, "argument 'targets' must be C-contiguous"),
    (lambda: prior_shift.em_marginals(Q.astype(np.float64), PS), TypeError, EM, "argument 'probs' must have dtype"),
    (lambda: prior_shift.em_marginals(Q * 2, PS), ValueError, EM, r"argument 'probs' must hold probabilities in \[0, 1\]"),
    (lambda: prior_shift.em_marginals(Q, PS[:3]), ValueError, EM, "argument 'source_marginals' must have shape"),
    (lambda: prior_shift.em_marginals(Q, ONE), ValueError, EM, r"argument 'source_marginals': source_marginals\[1\]"),
    (lambda: prior_shift.em_marginals(Q, NAN), FloatingPointError, EM, "argument 'source_marginals'"),
    (lambda: prior_shift.em_marginals(Q, PS, tol=0), ValueError, EM, "argument 'tol' must be > 0"),
    (lambda: prior_shift.em_marginals(Q, PS, max_iter=0), ValueError, EM, "argument 'max_iter' must be >= 1"),
    (lambda: prior_shift.em_marginals(np.zeros((0, 5), np.float32), PS), ValueError, EM, "argument 'probs' must have n"),
    (lambda: prior_shift.adapt_multilabel(Z.astype(np.float64), PS), TypeError, AD,
     "argument 'test_logits' must have dtype float32"),
    (lambda: prior_shift.adapt_multilabel(Z, ZERO), ValueError, AD, r"argument 'source_marginals': source_marginals\[2\]"),
    (lambda: prior_shift.adapt_multilabel(Z, PS[:4]), ValueError, AD, "argument 'test_logits' must have shape"),
    (lambda: prior_shift.adapt_multilabel(Z, PS, pseudo_count=-1), ValueError, AD, "argument 'pseudo_count'"),
    (lambda: prior_shift.adapt_multilabel(Z, PS, max_iter=0), ValueError, AD, "argument 'max_iter'"),
    (lambda: prior_shift.adapt_multilabel(np.zeros((0, 5), np.float32), PS), ValueError, AD,
     "argument 'test_logits' must have n >= 1"),
    (lambda: metrics.multilabel_summary(Z, Y.astype(np.float32)), TypeError, MS, "argument 'targets' must have dtype"),
    (lambda: metrics.multilabel_summary(Z, Y[:, :4]), ValueError, MS, "argument 'targets' must have shape"),
    (lambda: metrics.multilabel_summary(Z, Y, threshold=1.0), ValueError, MS, "argument 'threshold'"),
    (lambda: metrics.multilabel_summary(Z, Y * 3), ValueError, MS, "argument 'targets' must hold 0 or 1"),
    (lambda: metrics.multilabel_summary(Z[:, ::2], Y[:, ::2]), ValueError, MS, "argument 'logits' must be C-contiguous"),
])
def test_bad_input_names_the_function_and_argument(call, error, func, message):
    with pytest.raises(error, match=f"^{func}: {message}"):
        call()
