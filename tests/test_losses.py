"""Losses against PyTorch autograd (float64 reference math) and central finite differences."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lade import losses, priors

C = 7
COUNTS = priors.lt_profile(C, 500, 0.01)  # 500 ... 5
PRIOR = priors.prior_from_counts(COUNTS)


def batch(n=16, classes=C, scale=3.0, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, classes)) * scale).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int64) if labels is None else np.asarray(labels, np.int64)
    return z, y


# ---- float64 torch references ----------------------------------------------------------------
def t(a):
    return torch.tensor(np.asarray(a, np.float64))


def ref_ce(z, y, offset=None, margin=None, s=1.0, weights=None, gamma=0.0, by_sum=False):
    y = torch.tensor(y)
    x = z + (0 if offset is None else t(offset))
    if margin is not None:
        x = x - F.one_hot(y, z.shape[1]).double() * t(margin)[y][:, None]
    x = s * x
    l = torch.logsumexp(x, 1) - x.gather(1, y[:, None])[:, 0]
    w = torch.ones_like(l) if weights is None else t(weights)[y]
    per = w * (1 - torch.exp(-l)) ** gamma * l if gamma else w * l
    return per.sum() / (w.sum() if by_sum else len(l))


def ref_lader(z, y, prior, lam, form="official"):
    n, classes = z.shape
    p = t(prior)
    onehot = F.one_hot(torch.tensor(y), classes).double()
    m = onehot.sum(0)
    first = (z * onehot).sum(0) / (m + 1e-8)
    log_u = math.log(1.0 / classes + 1e-9)
    if form == "official":
        S = torch.logsumexp(z + (log_u - torch.log(p + 1e-9))[None, :], 0) - math.log(n)
    else:
        row = log_u - torch.log(p[torch.tensor(y)] + 1e-9)
        S = torch.logsumexp(z + row[:, None], 0) - math.log(n)
    return -(p * (first - S - lam * S ** 2)).sum()


def cb_weights(counts, beta):
    w = (1 - beta) / (1 - np.power(beta, np.asarray(counts, np.float64)))
    return w / w.sum() * len(counts)


def ldam_margins(counts, max_m):
    m = 1 / np.sqrt(np.sqrt(np.asarray(counts, np.float64)))
    return m * (max_m / m.max())


CASES = {
    "softmax_ce": (losses.SoftmaxCE(), lambda z, y: ref_ce(z, y)),
    "lade_ce": (losses.LADECELoss(PRIOR), lambda z, y: ref_ce(z, y, offset=np.log(PRIOR.astype(np.float64) + 1e-9))),
    "lader": (losses.LADERLoss(PRIOR, 0.1), lambda z, y: ref_lader(z, y, PRIOR, 0.1)),
    "lader_paper": (losses.LADERLoss(PRIOR, 0.1, form="paper"), lambda z, y: ref_lader(z, y, PRIOR, 0.1, "paper")),
    "lade": (losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01),
             lambda z, y: (ref_ce(z, y, offset=np.log(PRIOR.astype(np.float64) + 1e-9))
                           + 0.1 * ref_lader(z, y, PRIOR, 0.01))),
    "logit_adjusted": (losses.LogitAdjustedLoss(PRIOR, tau=1.5),
                       lambda z, y: ref_ce(z, y, offset=1.5 * np.log(PRIOR.astype(np.float64) + 1e-12))),
    "focal": (losses.FocalLoss(2.0), lambda z, y: ref_ce(z, y, gamma=2.0)),
    "focal_half": (losses.FocalLoss(0.5), lambda z, y: ref_ce(z, y, gamma=0.5)),
    "class_balanced": (losses.ClassBalancedLoss(COUNTS, 0.999),
                       lambda z, y: ref_ce(z, y, weights=cb_weights(COUNTS, 0.999))),
    "class_balanced_focal": (losses.ClassBalancedLoss(COUNTS, 0.99, base="focal", gamma=1.0),
                             lambda z, y: ref_ce(z, y, weights=cb_weights(COUNTS, 0.99), gamma=1.0)),
    "ldam": (losses.LDAMLoss(COUNTS, 0.5, 30.0), lambda z, y: ref_ce(z, y, margin=ldam_margins(COUNTS, 0.5), s=30.0)),
    "ldam_weighted": (losses.LDAMLoss(COUNTS, 0.5, 30.0, weights=cb_weights(COUNTS, 0.9999)),
                      lambda z, y: ref_ce(z, y, margin=ldam_margins(COUNTS, 0.5), s=30.0,
                                          weights=cb_weights(COUNTS, 0.9999), by_sum=True)),
}


def torch_value_grad(ref, z, y):
    zt = t(z).requires_grad_(True)
    v = ref(zt, y)
    v.backward()
    return v.item(), zt.grad.numpy()


def check_against_torch(name, z, y, rtol=2e-5):
    loss, ref = CASES[name]
    value, grad = loss(z, y)
    ref_value, ref_grad = torch_value_grad(ref, z, y)
    assert value == pytest.approx(ref_value, rel=rtol, abs=1e-5), name
    scale = max(np.abs(ref_grad).max(), 1e-3)
    np.testing.assert_allclose(grad, ref_grad, atol=rtol * scale * 10, rtol=0, err_msg=name)
    return value, grad


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_random(name):
    z, y = batch(n=16)
    check_against_torch(name, z, y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_absent_classes(name):
    z, y = batch(n=12, labels=[0, 2, 2, 0, 5, 0, 2, 2, 5, 0, 0, 2])  # classes 1, 3, 4, 6 absent
    check_against_torch(name, z, y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_of_one(name):
    z, y = batch(n=1, labels=[3])
    check_against_torch(name, z, y)


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_of_80(name):
    rng = np.random.default_rng(5)
    z = rng.choice([-80.0, 80.0, 0.0], size=(9, C)).astype(np.float32)
    y = rng.integers(0, C, 9)
    value, grad = CASES[name][0](z, y)
    assert np.isfinite(value) and np.isfinite(grad).all()
    check_against_torch(name, z, y, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_finite_differences(name):
    """Central differences of our own loss value (float64 logits perturbation on float32 input)."""
    loss = CASES[name][0]
    z, y = batch(n=6, scale=1.0, seed=3)
    _, grad = loss(z, y)
    h = 1e-2
    rng = np.random.default_rng(1)
    for i, c in zip(rng.integers(0, 6, 8), rng.integers(0, C, 8)):
        zp, zm = z.copy(), z.copy()
        zp[i, c] += h
        zm[i, c] -= h
        fd = (loss(zp, y)[0] - loss(zm, y)[0]) / (2 * h)
        assert fd == pytest.approx(grad[i, c], abs=2e-3 * max(1.0, abs(fd))), (name, i, c)


def test_big_batch_uses_threads_and_matches_torch():
    z, y = batch(n=300, classes=200, seed=9)
    p = priors.prior_from_counts(priors.lt_profile(200, 500, 0.01))
    v, g = losses.LADELoss(p, 0.1, 0.01)(z, y)
    rv, rg = torch_value_grad(lambda zz, yy: ref_ce(zz, yy, offset=np.log(p.astype(np.float64) + 1e-9))
                              + 0.1 * ref_lader(zz, yy, p, 0.01), z, y)
    assert v == pytest.approx(rv, rel=1e-5)
    np.testing.assert_allclose(g, rg, atol=1e-7)


def test_grad_is_overwritten_not_accumulated():
    z, y = batch()
    loss = losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01)
    buf = np.full(z.shape, 123.0, np.float32)
    _, g1 = loss(z, y)
    v, g2 = loss(z, y, grad=buf)
    assert g2 is buf
    np.testing.assert_array_equal(g1, g2)


def test_lader_lambda_zero_ignores_prior_offset_in_gradient():
    # spec §1.6: with lambda = 0 the importance offset b_c does not reach the gradient
    z, y = batch()
    _, g = losses.lader(z, y, PRIOR, remine_lambda=0.0)
    S_free = torch.softmax(t(z), 0).numpy()  # batch-softmax per column
    onehot = np.eye(C)[y]
    m = onehot.sum(0)
    expected = PRIOR[None, :] * (S_free - onehot / (m + 1e-8))
    np.testing.assert_allclose(g, expected, atol=1e-6)


def test_function_forms_and_registry():
    z, y = batch()
    assert losses.lade_ce(z, y, PRIOR)[0] == pytest.approx(losses.LADECELoss(PRIOR)(z, y)[0])
    assert losses.balanced_softmax(z, y, PRIOR)[0] == pytest.approx(losses.lade_ce(z, y, PRIOR)[0])
    assert losses.lade_loss(z, y, PRIOR, 0.1, 0.01)[0] == pytest.approx(
        losses.lade_ce(z, y, PRIOR)[0] + 0.1 * losses.lader(z, y, PRIOR, 0.01)[0], rel=1e-6)
    kwargs = {"softmax_ce": {}, "lade_ce": {"prior": PRIOR}, "balanced_softmax": {"prior": PRIOR},
              "lader": {"prior": PRIOR, "remine_lambda": 0.1}, "lade": {"prior": PRIOR, "alpha": 0.1, "remine_lambda": 0.01},
              "logit_adjusted": {"prior": PRIOR, "tau": 1.0}, "focal": {"gamma": 2.0},
              "class_balanced": {"counts": COUNTS, "beta": 0.9999}, "ldam": {"counts": COUNTS, "max_margin": 0.5, "s": 30.0},
              "ldam_drw": {"counts": COUNTS, "drw_epoch": 3, "beta": 0.9999, "max_margin": 0.5, "s": 30.0},
              "causal_norm": {}}
    assert sorted(kwargs) == losses.names()
    for name, kw in kwargs.items():
        v, g = losses.make(name, **kw)(z, y)
        assert np.isfinite(v) and g.shape == z.shape
    with pytest.raises(ValueError, match="lade.losses.make: argument 'name'"):
        losses.make("pc_softmax")


def test_ldam_drw_switches_weights():
    z, y = batch()
    loss = losses.ldam_drw(COUNTS, drw_epoch=2, beta=0.9999, max_margin=0.5, s=30.0)
    loss.set_epoch(1)
    plain = loss(z, y)[0]
    assert plain == pytest.approx(losses.ldam(z, y, COUNTS, 0.5, 30.0)[0])
    loss.set_epoch(2)
    weighted = loss(z, y)[0]
    assert weighted == pytest.approx(losses.ldam(z, y, COUNTS, 0.5, 30.0, weights=cb_weights(COUNTS, 0.9999))[0], rel=1e-6)
    assert weighted != pytest.approx(plain)


def test_test_time_forms():
    z, _ = batch()
    pt = np.full(C, 1.0 / C, np.float32)
    pt[0] = 0.4
    pt /= pt.sum()
    np.testing.assert_allclose(losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01).test_time_adjust(z, pt), z + np.log(pt), atol=1e-5)
    np.testing.assert_allclose(losses.LADECELoss(PRIOR).test_time_adjust(z), z, atol=0)
    np.testing.assert_allclose(losses.SoftmaxCE(PRIOR).test_time_adjust(z, pt), z - np.log(PRIOR) + np.log(pt),
                               atol=1e-5)
    assert losses.SoftmaxCE().test_time_form == "pc" and losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01).test_time_form == "add_target"
    with pytest.raises(ValueError, match="source_prior"):
        losses.SoftmaxCE().test_time_adjust(z)


# ---- bad input ------------------------------------------------------------------------------------
def test_labels_out_of_range():
    z, y = batch()
    y[3] = C
    for loss in (losses.SoftmaxCE(), losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01), losses.LADERLoss(PRIOR, 0.1)):
        with pytest.raises(ValueError, match=r"argument 'labels'.*labels\[3\] = 7"):
            loss(z, y)
    y[3] = -1
    with pytest.raises(ValueError, match="labels"):
        losses.lade_ce(z, y, PRIOR)


def test_length_mismatch():
    z, y = batch()
    with pytest.raises(ValueError, match=r"lade.losses.lade_loss: argument 'labels' must have shape \(16,\)"):
        losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01)(z, y[:-1])
    with pytest.raises(ValueError, match="argument 'grad'"):
        losses.softmax_ce(z, y, grad=np.zeros((3, C), np.float32))


@pytest.mark.parametrize("bad,msg", [(PRIOR * 0.93, "must sum to 1, got 0.93"),
                                     (np.r_[PRIOR[:-1] + PRIOR[-1], 0.0], r"prior\[6\] = 0"),
                                     (np.r_[PRIOR[:-1] + 2 * PRIOR[-1], -PRIOR[-1]], r"prior\[6\] = -"),
                                     (PRIOR[:-1] / PRIOR[:-1].sum(), "shape")])
def test_bad_priors(bad, msg):
    z, y = batch()
    with pytest.raises(ValueError, match=msg):
        losses.lade_loss(z, y, bad, 0.1, 0.01)
    with pytest.raises(ValueError, match=msg):
        losses.LADERLoss(bad, 0.1)(z, y) if "shape" in msg else losses.LADERLoss(bad, 0.1)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_logits(value):
    z, y = batch()
    z[2, 4] = value
    for loss in (losses.SoftmaxCE(), losses.LADELoss(PRIOR, alpha=0.1, remine_lambda=0.01), losses.FocalLoss(2.0), losses.LDAMLoss(COUNTS, 0.5, 30.0)):
        with pytest.raises(FloatingPointError, match=r"argument 'logits' has a non-finite value .* at \[2, 4\]"):
            loss(z, y)


def test_wrong_dtype_and_layout():
    z, y = batch()
    with pytest.raises(TypeError, match="argument 'logits' must have dtype float32"):
        losses.softmax_ce(z.astype(np.float64), y)
    with pytest.raises(TypeError, match="argument 'labels' must have dtype int64"):
        losses.softmax_ce(z, y.astype(np.int32))
    with pytest.raises(ValueError, match="C-contiguous"):
        losses.softmax_ce(np.asfortranarray(z), y)


def test_zero_count_class_is_explicit():
    counts = COUNTS.copy()
    counts[4] = 0
    with pytest.raises(ValueError, match="class 4 has no samples"):
        losses.LADELoss(priors.prior_from_counts(counts), 0.1, 0.01)
    with pytest.raises(ValueError, match=r"counts\[4\] = 0"):
        losses.LDAMLoss(counts, 0.5, 30.0)
    p = priors.prior_from_counts(counts, eps=1e-3)
    z, y = batch()
    v, g = losses.LADELoss(p, 0.1, 0.01)(z, y)
    assert np.isfinite(v) and np.isfinite(g).all()


def test_bad_loss_config():
    z, y = batch()
    with pytest.raises(ValueError, match=r"argument 'weights': weights\[1\] = -1"):
        losses.ldam(z, y, COUNTS, 0.5, 30.0, weights=np.r_[1.0, -1.0, np.ones(C - 2)])
    with pytest.raises(ValueError, match="argument 'gamma'"):
        losses.FocalLoss(-1.0)
    with pytest.raises(ValueError, match="argument 'beta'"):
        losses.ClassBalancedLoss(COUNTS, beta=1.0)
