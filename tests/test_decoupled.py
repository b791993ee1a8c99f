"""The decoupled second stage (lade.decoupled, csrc/ltmath/decoupled.c) against the same training in
PyTorch on the same features and batch order, by central finite differences and by its defining
properties (tau = 0 and LWS scales of 1 are the classifier as trained)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lade
from lade import decoupled, priors, sampling

C, D = 6, 12
COUNTS = priors.lt_profile(C, 60, 0.1)  # 60 ... 6


def features(counts=COUNTS, dim=D, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    centres = rng.normal(size=(len(counts), dim)) * 1.5
    x = (centres[y] + rng.normal(size=(y.size, dim))).astype(np.float32)
    return x, y


def torch_fit(x, y, weight, bias, epochs, batch_size, lr, momentum, weight_decay, order, loss):
    """SGD over the given per-epoch row orders with a per-epoch cosine learning rate, in float32."""
    w = torch.tensor(weight, requires_grad=True)
    b = torch.tensor(bias, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=0)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for e in range(epochs):
        rows = order(e)
        for start in range(0, len(rows), batch_size):
            idx = torch.tensor(rows[start:start + batch_size])
            opt.zero_grad()
            loss(xt[idx] @ w.T + b, yt[idx]).backward()
            opt.step()
        sched.step()
    return w.detach().numpy(), b.detach().numpy()


def torch_lade(prior, alpha, lam):
    p = torch.tensor(prior)
    log_u = math.log(1.0 / C + 1e-9)

    def loss(z, y):
        ce = F.cross_entropy(z + torch.log(p + 1e-9), y)
        onehot = F.one_hot(y, C).float()
        first = (z * onehot).sum(0) / (onehot.sum(0) + 1e-8)
        s = torch.logsumexp(z + (log_u - torch.log(p + 1e-9))[None, :], 0) - math.log(z.shape[0])
        return ce + alpha * -(p * (first - s - lam * s ** 2)).sum()
    return loss


def init(seed=3):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(C, D)) * 0.1).astype(np.float32), (rng.normal(size=C) * 0.1).astype(np.float32)


SGD = dict(epochs=4, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4)


def test_crt_matches_torch_with_class_balanced_order():
    x, y = features()
    w0, b0 = init()
    got = decoupled.crt(x, y, C, seed=5, init=(w0, b0), **SGD)
    order = sampling.SquareRootSampler(y, C, seed=5, q=0.0)  # class-balanced: q = 0
    w, b = torch_fit(x, y, w0, b0, order=order.epoch_indices, loss=F.cross_entropy, **SGD)
    np.testing.assert_allclose(got.weight, w, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(got.bias, b, rtol=1e-4, atol=2e-5)
    assert not np.allclose(got.weight, w0)  # it trained


def test_lade_retrain_matches_torch():
    x, y = features(seed=1)
    w0, b0 = init(4)
    prior = priors.prior_from_counts(COUNTS)
    got = decoupled.lade_retrain(x, y, prior, C, alpha=0.1, remine_lambda=0.01, seed=2, init=(w0, b0), **SGD)
    order = sampling.InstanceSampler(len(y), seed=2)
    w, b = torch_fit(x, y, w0, b0, order=order.epoch_indices, loss=torch_lade(prior, 0.1, 0.01), **SGD)
    np.testing.assert_allclose(got.weight, w, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(got.bias, b, rtol=1e-4, atol=2e-5)


def test_lws_matches_torch_and_keeps_the_classifier():
    x, y = features(seed=2)
    w0, b0 = init(5)
    got = decoupled.lws(x, y, w0, b0, seed=7, **SGD)
    s = torch.ones(C, requires_grad=True)
    opt = torch.optim.SGD([s], lr=SGD["lr"], momentum=SGD["momentum"], weight_decay=SGD["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, SGD["epochs"], eta_min=0)
    order = sampling.SquareRootSampler(y, C, seed=7, q=0.0)
    xt, yt, wt, bt = map(torch.tensor, (x, y, w0, b0))
    for e in range(SGD["epochs"]):
        rows = order.epoch_indices(e)
        for start in range(0, len(rows), SGD["batch_size"]):
            idx = torch.tensor(rows[start:start + SGD["batch_size"]])
            opt.zero_grad()
            F.cross_entropy((xt[idx] @ wt.T + bt) * s, yt[idx]).backward()
            opt.step()
        sched.step()
    np.testing.assert_allclose(got.scales, s.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert got.weight is w0 and got.bias is b0
    np.testing.assert_allclose(got.logits(x), (x @ w0.T + b0) * got.scales, rtol=1e-5, atol=1e-5)


def test_lws_with_scales_fixed_at_one_is_the_identity():
    x, y = features()
    w0, b0 = init()
    frozen = decoupled.lws(x, y, w0, b0, lr=0.0, epochs=2)
    np.testing.assert_array_equal(frozen.scales, np.ones(C, np.float32))
    np.testing.assert_array_equal(frozen.logits(x), decoupled.logits(x, w0, b0))


def test_lws_gradient_matches_torch_and_finite_differences():
    x, y = features(seed=3)
    w0, b0 = init(6)
    scales = np.linspace(0.5, 1.5, C).astype(np.float32)
    value, grad = decoupled.lws_loss(x, y, w0, b0, scales)
    st = torch.tensor(scales.astype(np.float64), requires_grad=True)
    ref = F.cross_entropy((torch.tensor(x, dtype=torch.float64) @ torch.tensor(w0, dtype=torch.float64).T
                           + torch.tensor(b0, dtype=torch.float64)) * st, torch.tensor(y))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(grad, st.grad.numpy(), rtol=1e-4, atol=1e-6)
    eps = 1e-2
    for c in range(C):
        up, down = scales.copy(), scales.copy()
        up[c] += eps
        down[c] -= eps
        fd = (decoupled.lws_loss(x, y, w0, b0, up)[0] - decoupled.lws_loss(x, y, w0, b0, down)[0]) / (2 * eps)
        assert grad[c] == pytest.approx(fd, rel=2e-3, abs=2e-5)


def test_tau_zero_is_the_identity_and_the_choice_is_the_best_balanced_accuracy():
    x, y = features(seed=4)
    w0, b0 = init(7)
    w0[0] *= 5  # a head class with a large weight norm, as a long-tailed model has
    zero = decoupled.tau_normalize_select(x, y, w0, b0, taus=[0.0])
    assert zero.tau == 0.0
    np.testing.assert_array_equal(zero.weight, w0)
    taus = np.float32([0.0, 0.5, 1.0, 1.5, 2.0])
    chosen = decoupled.tau_normalize_select(x, y, w0, b0, taus=taus)
    expected = []
    for tau in taus:
        wt = w0 / np.linalg.norm(w0, axis=1, keepdims=True) ** tau
        pred = (x @ wt.T + b0).argmax(1)
        expected.append(np.mean([np.mean(pred[y == c] == c) for c in range(C)]))
    np.testing.assert_allclose(chosen.info["held_out_balanced_accuracy"], expected, atol=1e-12)
    assert chosen.tau == float(taus[int(np.argmax(expected))])
    np.testing.assert_allclose(chosen.weight, lade.posthoc.tau_normalize(w0, chosen.tau))


def test_crt_helps_the_tail_on_long_tailed_features():
    """The defining claim: class-balanced re-training moves accuracy towards the tail classes."""
    x, y = features(counts=priors.lt_profile(C, 300, 0.02), seed=8)
    plain = decoupled.crt(x, y, C, sampling="instance", epochs=10, batch_size=64, seed=0)
    balanced = decoupled.crt(x, y, C, epochs=10, batch_size=64, seed=0)
    xt, yt = features(counts=[100] * C, seed=8)  # same centres, balanced test
    acc = {k: lade.metrics.per_class_accuracy(lade.metrics.confusion_matrix(m.logits(xt), yt, C))
           for k, m in (("plain", plain), ("balanced", balanced))}
    assert acc["balanced"][-2:].mean() > acc["plain"][-2:].mean()


def test_bad_input_raises_named_errors():
    x, y = features()
    w0, b0 = init()
    with pytest.raises(ValueError, match=r"lade.decoupled.crt: argument 'sampling'"):
        decoupled.crt(x, y, C, sampling="balanced")
    with pytest.raises(ValueError, match=r"lade.decoupled.crt: argument 'labels'.*outside \[0, 3\)"):
        decoupled.crt(x, y, 3)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(FloatingPointError, match=r"lade.decoupled.crt: argument 'features'.*\[2, 1\]"):
        decoupled.crt(bad, y, C)
    with pytest.raises(ValueError, match=r"lade.decoupled.crt: argument 'labels' must have shape"):
        decoupled.crt(x, y[:5], C)
    with pytest.raises(TypeError, match=r"lade.decoupled.crt: argument 'features'.*float32"):
        decoupled.crt(x.astype(np.float64), y, C)
    with pytest.raises(ValueError, match=r"lade.decoupled.lade_retrain: argument 'prior'"):
        decoupled.lade_retrain(x, y, None, C)
    with pytest.raises(ValueError, match=r"lade.decoupled.lade_retrain: argument 'prior' must have shape"):
        decoupled.lade_retrain(x, y, priors.prior_from_counts(COUNTS[:3]), C)
    with pytest.raises(ValueError, match=r"lade.decoupled.lws: argument 'scales' must have shape"):
        decoupled.lws(x, y, w0, b0, scales=np.ones(C + 1, np.float32))
    with pytest.raises(ValueError, match=r"lade.decoupled.lws: argument 'epochs' must be >= 1"):
        decoupled.lws(x, y, w0, b0, epochs=0)
    with pytest.raises(ValueError, match=r"lade.decoupled.tau_normalize_select: argument 'taus'.*not finite"):
        decoupled.tau_normalize_select(x, y, w0, b0, taus=[0.0, np.inf])
    with pytest.raises(ValueError, match=r"lade.decoupled.tau_normalize_select: argument 'weight' must have shape"):
        decoupled.tau_normalize_select(x, y, w0[:, :3].copy(), b0)


def test_a_learning_rate_that_overflows_the_weights_is_refused():
    """Issue 28: lr=1e30 returned infinite weights without an error; the caller's arrays are unchanged."""
    x, y = features()
    w0, b0 = init()
    for fit in (lambda: decoupled.crt(x, y, C, lr=1e30, init=(w0, b0)),
                lambda: decoupled.lade_retrain(x, y, priors.prior_from_counts(COUNTS), C, lr=1e30, init=(w0, b0)),
                lambda: decoupled.lws(x, y, w0, b0, lr=1e30)):
        with pytest.raises(FloatingPointError, match=r"lade.decoupled.(crt|lade_retrain|lws): an SGD step at epoch "
                                                     r"\d+ \(lr .*\) made parameter \d+ (inf|-inf|nan); the learning"):
            fit()
    np.testing.assert_array_equal(init()[0], w0)


def test_empty_features_and_huge_class_counts_are_refused_before_allocating():
    """Issue 28: zero features failed inside NumPy (OverflowError), classes=10^9 asked NumPy for 60 GB."""
    x, y = features()
    for shape in ((0, 8), (4, 0)):
        with pytest.raises(ValueError, match=rf"lade.decoupled.crt: argument 'features' must be a 2-d array \(n, dim\) "
                                             rf"with n, dim >= 1, got \({shape[0]}, {shape[1]}\)"):
            decoupled.crt(np.zeros(shape, np.float32), y[:shape[0]], C)
    with pytest.raises(ValueError, match=r"lade.decoupled.lws: argument 'features' must have n >= 1 rows and dim >= 1"):
        decoupled.lws(np.zeros((0, x.shape[1]), np.float32), y[:0], *init())
    with pytest.raises(ValueError, match=r"lade.decoupled.crt: argument 'classes' must be <= 1000000, got 1000000000"):
        decoupled.crt(x, y, 10 ** 9)
    with pytest.raises(ValueError, match=r"lade.decoupled.lade_retrain: argument 'labels' holds label 999999999"):
        decoupled.lade_retrain(x, np.full_like(y, 10 ** 9 - 1), priors.prior_from_counts(COUNTS))


def test_lade_retraining_converges_to_a_classifier_free_of_the_prior():
    """Issue 28: after cRT's 10 epochs of instance sampling the LADE re-trained classifier still favoured
    the head (few-shot recall 0.41 here against cRT's 0.74), like Balanced Softmax re-training: the
    tail classes had not been seen enough. The default epochs show the smallest class as often as
    cRT's 10 class-balanced epochs do."""
    classes, dim = 10, 32
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)).astype(np.float32) * 0.6
    counts = priors.lt_profile(classes, 500, 1 / 50)

    def draw(per_class, seed):
        y = np.repeat(np.arange(classes), per_class).astype(np.int64)
        x = centres[y] + np.random.default_rng(seed).normal(size=(y.size, dim))
        return np.maximum(x, 0).astype(np.float32), y  # non-negative, as after a ReLU
    x, y = draw(counts, 1)
    xt, yt = draw([300] * classes, 2)

    def recall(clf):
        return lade.metrics.per_class_accuracy(lade.metrics.confusion_matrix(clf.logits(xt), yt, classes))
    crt = recall(decoupled.crt(x, y, classes))
    p_s = priors.prior_from_counts(counts)
    for alpha in (0.1, 0.0):  # LADE, and Balanced Softmax re-training
        acc = recall(decoupled.lade_retrain(x, y, p_s, classes, alpha=alpha))
        assert acc[-3:].mean() > crt[-3:].mean() - 0.05 and acc.mean() > crt.mean() - 0.02, (alpha, acc, crt)
    assert decoupled.instance_epochs(y, 10) == 10 * int(np.ceil(counts.mean() / counts.min()))
