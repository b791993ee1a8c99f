"""Every layer of lade.nn, forward and backward, against PyTorch and finite differences.

Tolerances. References are computed by PyTorch in float64 from the very same
float32 inputs, so the error measured is lade's own float32 rounding. Errors are
reported as max|lade - ref| / max|ref| over the whole array:
  FWD_TOL  2e-5  forward outputs (dot products of at most a few hundred terms);
  BWD_TOL  5e-5  gradients (weight gradients sum over N*OH*OW, up to ~2000 terms);
  FD_TOL   2e-3  against central finite differences taken on lade's float32 forward
                 (eps 1e-2, loss summed in float64; layers are linear or smooth there,
                 ReLU kinks and max-pool ties are kept away from by construction).
Layers that only move values (add, concat, shortcut, max pool) must be exact.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lade.nn as lnn
from torch_reference import shortcut_a as torch_shortcut_a

FWD_TOL = 2e-5
BWD_TOL = 5e-5
FD_TOL = 2e-3
FD_EPS = 1e-2


def rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.abs(expected).max() if expected.size else 0.0
    return float(np.abs(actual - expected).max() / max(scale, 1e-30)) if expected.size else 0.0


def assert_close(actual, expected, tol, what):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, expected float32"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: max|lade - ref| / max|ref| = {err:.3g} > {tol:g}"


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def finite_difference(loss_of, array, eps=FD_EPS):
    """Central differences of the scalar loss_of() w.r.t. every entry of the
    float32 `array`, which loss_of reads by reference. The step is divided by
    the perturbation actually stored in float32."""
    grad = np.zeros(array.shape)
    flat = array.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + np.float32(eps)
        hi, loss_hi = float(flat[i]), loss_of()
        flat[i] = orig - np.float32(eps)
        lo, loss_lo = float(flat[i]), loss_of()
        flat[i] = orig
        grad.flat[i] = (loss_hi - loss_lo) / (hi - lo)
    return grad


def projected(out, weights):
    """A scalar loss sum(out * weights) accumulated in float64."""
    return float(np.sum(out.astype(np.float64) * weights))


# ---------------------------------------------------------------------------------------------------------------
# conv2d

# (N, Cin, H, W, Cout, kh, kw, stride, padding, bias)
CONV_CASES = [
    (2, 3, 7, 7, 4, 3, 3, 1, 1, True),
    (2, 3, 7, 7, 4, 3, 3, 1, 0, False),
    (1, 2, 8, 6, 3, 1, 1, 1, 0, True),            # 1x1 stride 1 (GEMM without im2col)
    (1, 2, 8, 6, 3, 1, 1, 2, 0, False),           # 1x1 stride 2
    (3, 4, 9, 11, 5, 5, 5, 2, 2, True),           # odd sizes, 5x5, stride 2, pad 2
    (2, 3, 15, 13, 4, 7, 7, 2, 3, False),         # 7x7 stem-like
    (2, 3, 9, 10, 4, 3, 5, (1, 2), (1, 2), True),  # non-square kernel, stride, padding
    (2, 1, 6, 5, 2, 2, 4, (2, 1), (0, 1), True),  # even, non-square kernel
    (2, 2, 5, 5, 3, 3, 3, 3, 2, True),            # stride 3: output size rounds down
    (1, 3, 3, 3, 2, 5, 5, 1, 2, False),           # kernel larger than the image
    (2, 16, 16, 16, 32, 3, 3, 2, 1, False),       # ResNet downsampling conv
    (4, 16, 12, 12, 16, 3, 3, 1, 1, True),
]


def conv_case_id(c):
    n, cin, h, w, cout, kh, kw, s, p, b = c
    return f"x{n}x{cin}x{h}x{w}-w{cout}x{kh}x{kw}-s{s}-p{p}-{'bias' if b else 'nobias'}".replace(" ", "")


def conv_inputs(rng, case):
    n, cin, h, w, cout, kh, kw, stride, padding, bias = case
    x = randn(rng, n, cin, h, w)
    weight = randn(rng, cout, cin, kh, kw)
    b = randn(rng, cout) if bias else None
    return x, weight, b, stride, padding


def torch_conv(x, weight, bias, stride, padding):
    xt, wt = t64(x, True), t64(weight, True)
    bt = t64(bias, True) if bias is not None else None
    return F.conv2d(xt, wt, bt, stride=pair(stride), padding=pair(padding)), xt, wt, bt


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv2d_forward_matches_torch(rng, case, naive):
    x, weight, bias, stride, padding = conv_inputs(rng, case)
    ref = F.conv2d(t64(x), t64(weight), None if bias is None else t64(bias), stride=pair(stride),
                   padding=pair(padding))
    out = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding, naive=naive)
    assert_close(out, ref, FWD_TOL, "conv2d_forward")


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv2d_backward_matches_torch(rng, case, naive):
    x, weight, bias, stride, padding = conv_inputs(rng, case)
    ref, xt, wt, bt = torch_conv(x, weight, bias, stride, padding)
    dout = randn(rng, *ref.shape)
    ref.backward(t64(dout))
    dx, dw, db = lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding, naive=naive)
    assert_close(dx, xt.grad, BWD_TOL, "conv2d_backward dx")
    assert_close(dw, wt.grad, BWD_TOL, "conv2d_backward dweight")
    # The bias gradient (sum of dout) is defined whether or not the forward had a bias.
    assert_close(db, dout.astype(np.float64).sum(axis=(0, 2, 3)), BWD_TOL, "conv2d_backward dbias")


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv2d_im2col_agrees_with_naive(rng, case):
    x, weight, bias, stride, padding = conv_inputs(rng, case)
    fast = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding)
    naive = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding, naive=True)
    assert_close(fast, naive, FWD_TOL, "conv2d_forward im2col vs naive")
    dout = randn(rng, *fast.shape)
    for a, b, name in zip(lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding),
                          lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding, naive=True),
                          ("dx", "dweight", "dbias")):
        assert_close(a, b, BWD_TOL, f"conv2d_backward {name} im2col vs naive")


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
def test_conv2d_writes_into_given_out(rng, naive):
    x, weight, bias, _, _ = conv_inputs(rng, CONV_CASES[0])
    out = np.full((2, 4, 7, 7), np.nan, dtype=np.float32)
    result = lnn.conv2d_forward(x, weight, bias, stride=1, padding=1, out=out, naive=naive)
    assert result is out
    ref = F.conv2d(t64(x), t64(weight), t64(bias), padding=1)
    assert_close(out, ref, FWD_TOL, "conv2d_forward into out")


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[4], CONV_CASES[6]], ids=conv_case_id)
def test_conv2d_backward_accumulates(rng, case, naive):
    x, weight, bias, stride, padding = conv_inputs(rng, case)
    out = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding)
    dout = randn(rng, *out.shape)
    fresh = lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding, naive=naive)
    start = [randn(rng, *g.shape) for g in fresh]
    given = [s.copy() for s in start]
    result = lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding, dx=given[0],
                                 dweight=given[1], dbias=given[2], naive=naive)
    for r, g, s, f, name in zip(result, given, start, fresh, ("dx", "dweight", "dbias")):
        assert r is g, f"conv2d_backward returned a different array for {name}"
        assert_close(g, s.astype(np.float64) + f, 1e-6, f"conv2d_backward accumulation into {name}")
    # Two calls into zeroed buffers give twice one call.
    zeros = [np.zeros_like(f) for f in fresh]
    for _ in range(2):
        lnn.conv2d_backward(dout, x, weight, stride=stride, padding=padding, dx=zeros[0], dweight=zeros[1],
                            dbias=zeros[2], naive=naive)
    for z, f, name in zip(zeros, fresh, ("dx", "dweight", "dbias")):
        assert_close(z, 2.0 * f.astype(np.float64), 1e-6, f"two conv2d_backward calls into {name}")


@pytest.mark.parametrize("naive", [False, True], ids=["im2col", "naive"])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), ((2, 1), (1, 2))])
def test_conv2d_backward_finite_differences(rng, naive, stride, padding):
    x, weight, bias = randn(rng, 2, 2, 5, 4), randn(rng, 3, 2, 3, 2), randn(rng, 3)
    out = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding, naive=naive)
    proj = rng.standard_normal(out.shape)

    def loss():
        return projected(lnn.conv2d_forward(x, weight, bias, stride=stride, padding=padding, naive=naive), proj)

    dx, dw, db = lnn.conv2d_backward(proj.astype(np.float32), x, weight, stride=stride, padding=padding,
                                     naive=naive)
    for analytic, array, name in ((dx, x, "dx"), (dw, weight, "dweight"), (db, bias, "dbias")):
        assert_close(analytic, finite_difference(loss, array), FD_TOL, f"conv2d {name} vs finite differences")


# ---------------------------------------------------------------------------------------------------------------
# batchnorm2d

BN_SHAPES = [(4, 3, 5, 5), (2, 16, 8, 8), (1, 4, 3, 7), (8, 2, 1, 1), (3, 5, 6, 2)]


def bn_inputs(rng, shape):
    c = shape[1]
    x = (randn(rng, *shape) * 1.7 + 0.4).astype(np.float32)
    weight = (1.0 + 0.5 * randn(rng, c)).astype(np.float32)
    bias = randn(rng, c)
    running_mean = randn(rng, c)
    running_var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    return x, weight, bias, running_mean, running_var


@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.25, 1e-3)])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm2d_forward_train_matches_torch(rng, shape, momentum, eps):
    x, weight, bias, rmean, rvar = bn_inputs(rng, shape)
    ref_rmean, ref_rvar = t64(rmean), t64(rvar)
    ref = F.batch_norm(t64(x), ref_rmean, ref_rvar, t64(weight), t64(bias), training=True, momentum=momentum,
                       eps=eps)
    rmean_arg, rvar_arg = rmean.copy(), rvar.copy()
    kwargs = {} if (momentum, eps) == (0.1, 1e-5) else {"momentum": momentum, "eps": eps}  # defaults
    out, save_mean, save_invstd = lnn.batchnorm2d_forward_train(x, weight, bias, rmean_arg, rvar_arg, **kwargs)
    assert_close(out, ref, FWD_TOL, "batchnorm2d_forward_train out")
    x64 = x.astype(np.float64)
    assert_close(save_mean, x64.mean(axis=(0, 2, 3)), FWD_TOL, "save_mean")
    assert_close(save_invstd, 1.0 / np.sqrt(x64.var(axis=(0, 2, 3)) + eps), FWD_TOL, "save_invstd (biased var)")
    # running statistics are updated in place: momentum towards the batch mean and the unbiased variance
    assert_close(rmean_arg, ref_rmean, FWD_TOL, "running_mean")
    assert_close(rvar_arg, ref_rvar, FWD_TOL, "running_var")


def test_batchnorm2d_statistics_by_hand():
    # One channel, four values 0..3: mean 1.5, biased variance 1.25, unbiased 5/3.
    x = np.arange(4, dtype=np.float32).reshape(2, 1, 1, 2)
    rmean, rvar = np.zeros(1, np.float32), np.ones(1, np.float32)
    out, save_mean, save_invstd = lnn.batchnorm2d_forward_train(
        x, np.ones(1, np.float32), np.zeros(1, np.float32), rmean, rvar)
    expected = (np.arange(4) - 1.5) / np.sqrt(1.25 + 1e-5)
    np.testing.assert_allclose(out.ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(save_mean, [1.5], rtol=1e-7)
    np.testing.assert_allclose(save_invstd, [1 / np.sqrt(1.25 + 1e-5)], rtol=1e-6)
    np.testing.assert_allclose(rmean, [0.1 * 1.5], rtol=1e-6)
    np.testing.assert_allclose(rvar, [0.9 + 0.1 * 5 / 3], rtol=1e-6)
    # eval with those running statistics, eps 1e-5
    out_eval = lnn.batchnorm2d_forward_eval(x, np.full(1, 2, np.float32), np.full(1, 0.5, np.float32), rmean, rvar)
    np.testing.assert_allclose(out_eval.ravel(), 2 * (np.arange(4) - rmean[0]) / np.sqrt(rvar[0] + 1e-5) + 0.5,
                               rtol=1e-6)


def test_batchnorm2d_forward_train_without_running_stats(rng):
    x, weight, bias, _, _ = bn_inputs(rng, (4, 3, 5, 5))
    out, _, _ = lnn.batchnorm2d_forward_train(x, weight, bias)
    ref = F.batch_norm(t64(x), None, None, t64(weight), t64(bias), training=True)
    assert_close(out, ref, FWD_TOL, "batchnorm2d_forward_train without running stats")


def test_batchnorm2d_large_mean_is_stable(rng):
    # Variance from E[x^2] - E[x]^2 in float32 loses ~4 digits at this offset;
    # PyTorch's float32 batch norm does not, and neither may lade.
    x, weight, bias, rmean, rvar = bn_inputs(rng, (8, 4, 8, 8))
    x = (x + 300.0).astype(np.float32)
    ref_rmean, ref_rvar = t64(rmean), t64(rvar)
    ref = F.batch_norm(t64(x), ref_rmean, ref_rvar, t64(weight), t64(bias), training=True)
    out, _, save_invstd = lnn.batchnorm2d_forward_train(x, weight, bias, rmean, rvar)
    assert_close(out, ref, 1e-4, "batchnorm2d_forward_train at mean 300")
    assert_close(save_invstd, 1 / np.sqrt(x.astype(np.float64).var(axis=(0, 2, 3)) + 1e-5), 1e-4,
                 "save_invstd at mean 300")
    assert_close(rvar, ref_rvar, 1e-4, "running_var at mean 300")


def test_batchnorm2d_train_needs_more_than_one_value_per_channel():
    # PyTorch raises here: the unbiased variance for the running statistics is undefined.
    x = np.full((1, 2, 1, 1), 3.0, np.float32)
    with pytest.raises(ValueError):
        F.batch_norm(torch.from_numpy(x), torch.zeros(2), torch.ones(2), training=True)
    rvar = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="batchnorm2d_forward_train"):
        lnn.batchnorm2d_forward_train(x, np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                                      rvar)
    assert np.all(rvar == 1.0), "running_var changed by a rejected call"


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm2d_forward_eval_matches_torch(rng, shape):
    x, weight, bias, rmean, rvar = bn_inputs(rng, shape)
    before = rmean.copy(), rvar.copy()
    ref = F.batch_norm(t64(x), t64(rmean), t64(rvar), t64(weight), t64(bias), training=False)
    out = lnn.batchnorm2d_forward_eval(x, weight, bias, rmean, rvar)
    assert_close(out, ref, FWD_TOL, "batchnorm2d_forward_eval")
    assert np.array_equal(rmean, before[0]) and np.array_equal(rvar, before[1]), "eval changed running stats"
    custom = lnn.batchnorm2d_forward_eval(x, weight, bias, rmean, rvar, eps=0.5)
    ref = F.batch_norm(t64(x), t64(rmean), t64(rvar), t64(weight), t64(bias), training=False, eps=0.5)
    assert_close(custom, ref, FWD_TOL, "batchnorm2d_forward_eval eps=0.5")


@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batchnorm2d_backward_matches_torch(rng, shape):
    x, weight, bias, _, _ = bn_inputs(rng, shape)
    xt, wt, bt = t64(x, True), t64(weight, True), t64(bias, True)
    ref = F.batch_norm(xt, None, None, wt, bt, training=True)
    dout = randn(rng, *shape)
    ref.backward(t64(dout))
    _, save_mean, save_invstd = lnn.batchnorm2d_forward_train(x, weight, bias)
    dx, dw, db = lnn.batchnorm2d_backward(dout, x, weight, save_mean, save_invstd)
    assert_close(dx, xt.grad, BWD_TOL, "batchnorm2d_backward dx")
    assert_close(dw, wt.grad, BWD_TOL, "batchnorm2d_backward dweight")
    assert_close(db, bt.grad, BWD_TOL, "batchnorm2d_backward dbias")


def test_batchnorm2d_backward_accumulates(rng):
    x, weight, bias, _, _ = bn_inputs(rng, (4, 3, 5, 5))
    _, save_mean, save_invstd = lnn.batchnorm2d_forward_train(x, weight, bias)
    dout = randn(rng, *x.shape)
    fresh = lnn.batchnorm2d_backward(dout, x, weight, save_mean, save_invstd)
    start = [randn(rng, *g.shape) for g in fresh]
    given = [s.copy() for s in start]
    result = lnn.batchnorm2d_backward(dout, x, weight, save_mean, save_invstd, dx=given[0], dweight=given[1],
                                      dbias=given[2])
    for r, g, s, f, name in zip(result, given, start, fresh, ("dx", "dweight", "dbias")):
        assert r is g, f"batchnorm2d_backward returned a different array for {name}"
        assert_close(g, s.astype(np.float64) + f, 1e-6, f"batchnorm2d_backward accumulation into {name}")


def test_batchnorm2d_backward_finite_differences(rng):
    x, weight, bias, _, _ = bn_inputs(rng, (2, 2, 3, 3))
    proj = rng.standard_normal(x.shape)

    def loss():
        return projected(lnn.batchnorm2d_forward_train(x, weight, bias)[0], proj)

    _, save_mean, save_invstd = lnn.batchnorm2d_forward_train(x, weight, bias)
    dx, dw, db = lnn.batchnorm2d_backward(proj.astype(np.float32), x, weight, save_mean, save_invstd)
    for analytic, array, name in ((dx, x, "dx"), (dw, weight, "dweight"), (db, bias, "dbias")):
        assert_close(analytic, finite_difference(loss, array), FD_TOL, f"batchnorm2d {name} vs finite differences")


# ---------------------------------------------------------------------------------------------------------------
# relu, add, concat

def test_relu_forward_backward(rng):
    x = randn(rng, 3, 4, 5, 7)
    x.flat[::11] = 0.0  # exact zeros: PyTorch's gradient there is 0
    out = lnn.relu_forward(x)
    assert np.array_equal(out, np.maximum(x, 0))
    xt = t64(x, True)
    dout = randn(rng, *x.shape)
    F.relu(xt).backward(t64(dout))
    dx = lnn.relu_backward(dout, out)
    assert_close(dx, xt.grad, 0.0, "relu_backward")
    start = randn(rng, *x.shape)
    given = start.copy()
    assert lnn.relu_backward(dout, out, dx=given) is given
    assert_close(given, start.astype(np.float64) + dx, 1e-7, "relu_backward accumulation")


def test_relu_propagates_nan_like_torch():
    # torch.relu(nan) is nan; a ReLU that turns NaN into 0 hides a poisoned
    # input from every later finiteness check.
    x = np.array([np.nan, -1.0, 0.0, 2.0, np.inf, -np.inf], np.float32).reshape(1, 1, 2, 3)
    expected = torch.relu(torch.from_numpy(x)).numpy()
    out = lnn.relu_forward(x)
    assert np.array_equal(out, expected, equal_nan=True), (
        f"relu_forward({x.ravel()}) = {out.ravel()}, torch {expected.ravel()}")


def test_relu_forward_in_place(rng):
    x = randn(rng, 2, 3, 4, 4)
    expected = np.maximum(x, 0)
    assert lnn.relu_forward(x, out=x) is x
    assert np.array_equal(x, expected)


def test_relu_backward_finite_differences(rng):
    x = randn(rng, 2, 3, 3, 3)
    x[np.abs(x) < 0.1] = 0.5  # keep every entry 5 steps away from the kink
    proj = rng.standard_normal(x.shape)
    dx = lnn.relu_backward(proj.astype(np.float32), lnn.relu_forward(x))
    numeric = finite_difference(lambda: projected(lnn.relu_forward(x), proj), x)
    assert_close(dx, numeric, FD_TOL, "relu dx vs finite differences")


def test_add_forward_backward(rng):
    a, b = randn(rng, 2, 3, 5, 5), randn(rng, 2, 3, 5, 5)
    assert np.array_equal(lnn.add_forward(a, b), a + b)
    out = np.empty_like(a)
    assert lnn.add_forward(a, b, out=out) is out and np.array_equal(out, a + b)
    dout = randn(rng, *a.shape)
    da, db = lnn.add_backward(dout)
    assert np.array_equal(da, dout) and np.array_equal(db, dout)
    start_a, start_b = randn(rng, *a.shape), randn(rng, *a.shape)
    ga, gb = start_a.copy(), start_b.copy()
    ra, rb = lnn.add_backward(dout, da=ga, db=gb)
    assert ra is ga and rb is gb
    assert np.array_equal(ga, start_a + dout) and np.array_equal(gb, start_b + dout)


@pytest.mark.parametrize("ca,cb", [(3, 5), (64, 64), (1, 1)])
def test_concat_forward_backward(rng, ca, cb):
    a, b = randn(rng, 2, ca, 4, 3), randn(rng, 2, cb, 4, 3)
    out = lnn.concat_forward(a, b)
    assert np.array_equal(out, np.concatenate([a, b], axis=1))
    at, bt = t64(a, True), t64(b, True)
    dout = randn(rng, *out.shape)
    torch.cat([at, bt], dim=1).backward(t64(dout))
    da, db = lnn.concat_backward(dout, ca)
    assert_close(da, at.grad, 0.0, "concat_backward da")
    assert_close(db, bt.grad, 0.0, "concat_backward db")
    start_a, start_b = randn(rng, *a.shape), randn(rng, *b.shape)
    ga, gb = start_a.copy(), start_b.copy()
    ra, rb = lnn.concat_backward(dout, ca, da=ga, db=gb)
    assert ra is ga and rb is gb
    assert np.array_equal(ga, start_a + da) and np.array_equal(gb, start_b + db)


# ---------------------------------------------------------------------------------------------------------------
# pooling

@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 5, 7, 5), (1, 128, 8, 8), (2, 2, 1, 1)], ids=str)
def test_global_avgpool_forward_backward(rng, shape):
    n, c, h, w = shape
    x = randn(rng, *shape)
    out = lnn.global_avgpool_forward(x)
    assert_close(out, x.astype(np.float64).mean(axis=(2, 3)), 1e-6, "global_avgpool_forward")
    dout = randn(rng, n, c)
    xt = t64(x, True)
    xt.mean(dim=(2, 3)).backward(t64(dout))
    dx = lnn.global_avgpool_backward(dout, h, w)
    assert_close(dx, xt.grad, 1e-6, "global_avgpool_backward")
    start = randn(rng, *shape)
    given = start.copy()
    assert lnn.global_avgpool_backward(dout, h, w, dx=given) is given
    assert_close(given, start.astype(np.float64) + dx, 1e-6, "global_avgpool_backward accumulation")


def test_global_avgpool_finite_differences(rng):
    x = randn(rng, 2, 3, 3, 5)
    proj = rng.standard_normal((2, 3))
    dx = lnn.global_avgpool_backward(proj.astype(np.float32), 3, 5)
    numeric = finite_difference(lambda: projected(lnn.global_avgpool_forward(x), proj), x)
    assert_close(dx, numeric, FD_TOL, "global_avgpool dx vs finite differences")


def distinct_values(rng, shape, spacing=0.05):
    """Values that are all at least `spacing` apart, so no max-pool ties, even
    after a finite-difference step."""
    return (rng.permutation(int(np.prod(shape))) * spacing - 10).astype(np.float32).reshape(shape)


# (shape, kernel, stride, padding)
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 3, 7, 9), 2, 2, 0),      # odd sizes: the last row/column is dropped
    ((1, 2, 9, 9), 3, 2, 1),      # the ImageNet stem pool
    ((2, 2, 6, 5), 3, 1, 1),      # overlapping windows: backward must scatter-add
    ((1, 3, 11, 10), 5, 3, 2),
    ((1, 1, 4, 4), 1, 1, 0),
]


@pytest.mark.parametrize("shape,kernel,stride,padding", POOL_CASES, ids=str)
def test_maxpool2d_matches_torch(rng, shape, kernel, stride, padding):
    x = distinct_values(rng, shape)
    ref, ref_idx = F.max_pool2d(t64(x), kernel, stride=stride, padding=padding, return_indices=True)
    out, argmax = lnn.maxpool2d_forward(x, kernel, stride=stride, padding=padding)
    assert_close(out, ref, 0.0, "maxpool2d_forward")
    assert argmax.dtype == np.int32, f"argmax dtype {argmax.dtype}"
    assert np.array_equal(argmax, ref_idx.numpy()), "maxpool2d argmax differs from torch's indices"
    xt = t64(x, True)
    dout = randn(rng, *out.shape)
    F.max_pool2d(xt, kernel, stride=stride, padding=padding).backward(t64(dout))
    dx = lnn.maxpool2d_backward(dout, argmax, shape[2], shape[3])
    assert_close(dx, xt.grad, 1e-6, "maxpool2d_backward")
    start = randn(rng, *shape)
    given = start.copy()
    assert lnn.maxpool2d_backward(dout, argmax, shape[2], shape[3], dx=given) is given
    assert_close(given, start.astype(np.float64) + dx, 1e-6, "maxpool2d_backward accumulation")


def test_maxpool2d_finite_differences(rng):
    x = distinct_values(rng, (1, 2, 5, 5))
    proj = rng.standard_normal(lnn.maxpool2d_forward(x, 3, stride=2, padding=1)[0].shape)
    _, argmax = lnn.maxpool2d_forward(x, 3, stride=2, padding=1)
    dx = lnn.maxpool2d_backward(proj.astype(np.float32), argmax, 5, 5)
    numeric = finite_difference(lambda: projected(lnn.maxpool2d_forward(x, 3, stride=2, padding=1)[0], proj), x)
    assert_close(dx, numeric, FD_TOL, "maxpool2d dx vs finite differences")


# ---------------------------------------------------------------------------------------------------------------
# option-A shortcut

# (shape, out_channels, stride)
SHORTCUT_CASES = [((2, 16, 32, 32), 32, 2), ((2, 32, 16, 16), 64, 2), ((3, 4, 7, 7), 8, 2),
                  ((2, 4, 5, 6), 8, 1), ((1, 6, 9, 4), 6, 2)]


@pytest.mark.parametrize("shape,out_channels,stride", SHORTCUT_CASES, ids=str)
def test_shortcut_a_matches_torch(rng, shape, out_channels, stride):
    x = randn(rng, *shape)
    ref = torch_shortcut_a(t64(x), out_channels, stride)
    out = lnn.shortcut_a_forward(x, out_channels, stride=stride)
    assert_close(out, ref, 0.0, "shortcut_a_forward")
    pad = (out_channels - shape[1]) // 2
    assert not out[:, :pad].any() and not out[:, pad + shape[1]:].any(), "padding channels must be zero"
    xt = t64(x, True)
    dout = randn(rng, *out.shape)
    torch_shortcut_a(xt, out_channels, stride).backward(t64(dout))
    dx = lnn.shortcut_a_backward(dout, shape[1], shape[2], shape[3], stride=stride)
    assert_close(dx, xt.grad, 0.0, "shortcut_a_backward")
    start = randn(rng, *shape)
    given = start.copy()
    assert lnn.shortcut_a_backward(dout, shape[1], shape[2], shape[3], stride=stride, dx=given) is given
    assert np.array_equal(given, start + dx), "shortcut_a_backward must accumulate"


def test_shortcut_a_default_stride_is_2(rng):
    x = randn(rng, 1, 2, 4, 4)
    out = lnn.shortcut_a_forward(x, 4)
    assert out.shape == (1, 4, 2, 2)
    assert np.array_equal(out[:, 1:3], x[:, :, ::2, ::2])


def test_shortcut_a_finite_differences(rng):
    x = randn(rng, 1, 2, 5, 3)
    proj = rng.standard_normal((1, 4, 3, 2))
    dx = lnn.shortcut_a_backward(proj.astype(np.float32), 2, 5, 3, stride=2)
    numeric = finite_difference(lambda: projected(lnn.shortcut_a_forward(x, 4, stride=2), proj), x)
    assert_close(dx, numeric, FD_TOL, "shortcut_a dx vs finite differences")


# ---------------------------------------------------------------------------------------------------------------
# linear

LINEAR_CASES = [(5, 7, 3, True), (8, 128, 100, True), (4, 64, 10, False), (1, 1, 1, True), (33, 17, 9, False)]


@pytest.mark.parametrize("n,fin,fout,bias", LINEAR_CASES, ids=str)
def test_linear_matches_torch(rng, n, fin, fout, bias):
    x, weight = randn(rng, n, fin), randn(rng, fout, fin)
    b = randn(rng, fout) if bias else None
    xt, wt = t64(x, True), t64(weight, True)
    bt = t64(b, True) if bias else None
    ref = F.linear(xt, wt, bt)
    out = lnn.linear_forward(x, weight, b)
    assert_close(out, ref, FWD_TOL, "linear_forward")
    dout = randn(rng, n, fout)
    ref.backward(t64(dout))
    dx, dw, db = lnn.linear_backward(dout, x, weight)
    assert_close(dx, xt.grad, BWD_TOL, "linear_backward dx")
    assert_close(dw, wt.grad, BWD_TOL, "linear_backward dweight")
    assert_close(db, dout.astype(np.float64).sum(axis=0), BWD_TOL, "linear_backward dbias")
    start = [randn(rng, *g.shape) for g in (dx, dw, db)]
    given = [s.copy() for s in start]
    result = lnn.linear_backward(dout, x, weight, dx=given[0], dweight=given[1], dbias=given[2])
    for r, g, s, f, name in zip(result, given, start, (dx, dw, db), ("dx", "dweight", "dbias")):
        assert r is g, f"linear_backward returned a different array for {name}"
        assert_close(g, s.astype(np.float64) + f, 1e-6, f"linear_backward accumulation into {name}")


def test_linear_finite_differences(rng):
    x, weight, bias = randn(rng, 3, 4), randn(rng, 5, 4), randn(rng, 5)
    proj = rng.standard_normal((3, 5))
    dx, dw, db = lnn.linear_backward(proj.astype(np.float32), x, weight)
    for analytic, array, name in ((dx, x, "dx"), (dw, weight, "dweight"), (db, bias, "dbias")):
        numeric = finite_difference(lambda: projected(lnn.linear_forward(x, weight, bias), proj), array)
        assert_close(analytic, numeric, FD_TOL, f"linear {name} vs finite differences")
