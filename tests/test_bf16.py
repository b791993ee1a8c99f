"""bfloat16 mixed precision (precision="bf16", run.precision: bf16).

Every bfloat16 kernel against a float64 reference (PyTorch in float64; PyTorch's
autocast is a speed anchor in benchmarks/train_step.py, never a reference here),
on every variant that has the kernels: "avx512_bf16" where the CPU has
AVX512-BF16 and "bf16_emulated" (portable C, the same packed data) everywhere.
Then a whole training step's gradients against the same step in float32, the
named errors, and the float32 state that stays float32.

Tolerance of one convolution (TOL_RMS, TOL_MAX), derived:
- bfloat16 keeps 8 significant bits; rounding to nearest even leaves an absolute
  error uniform in +-ulp/2, ulp = 2^-7 of the binade's base, so the relative
  error of one rounded value has an rms of 2^-7 / sqrt(12) * sqrt(E[1/m^2]) with
  m the mantissa in [1, 2) (E[1/m^2] = 1/2 for log-uniform mantissas): 0.0016.
- A product of two rounded values: sqrt(2) * 0.0016 = 0.0023 rms relative; the
  product itself and the float32 sums add ~K * 2^-24, negligible for K <= 576.
- With random signs the sum's error and the sum both grow as sqrt(K) (K = the
  reduction length, cin * 9), so the rms relative error does not grow with K.
- The rounding is on Winograd's transformed values: V = B^T d B (each entry 4
  inputs, +-1: energy 4) and U = G w G^T (row energies 1, 3/4, 3/4, 1), and an
  output sums 3 x 3 of the 16 products: energy (1 + 3/4 + 3/4)^2 * 4 = 25
  against 9 for the direct sum, an rms gain of 5/3.
So one convolution's error is 0.0023 * 5/3 = 0.0038 rms relative (measured:
0.0036 to 0.0041 for the forward and both gradients). TOL_RMS allows twice that
(the weight gradient's transform gains differ a little, and the sample is
finite): 2^-7. The largest error over ~10^4..10^5 outputs lies ~4-5 sigma out, as
does the largest reference value, so max|err| / max|ref| is also ~0.004;
TOL_MAX allows four times 2^-8.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lade
import lade.nn as lnn
from conftest import kernel_variant
from lade.app import config as config_mod

TOL_RMS = 2.0**-7
TOL_MAX = 4 * 2.0**-8
BF16_VARIANTS = [v for v in ("avx512_bf16", "bf16_emulated") if v in lade.cpu_info()["supported"].split()]
NATIVE = "avx512_bf16" in lade.cpu_info()["supported"].split()


@pytest.fixture(params=BF16_VARIANTS)
def bf16_variant(request):
    with kernel_variant(request.param):
        yield request.param


@pytest.fixture
def variant_without_bf16():
    with kernel_variant("generic"):
        yield "generic"


def errors(actual, expected):
    """(rms of the error / rms of the reference, max |error| / max |reference|)"""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape
    err = actual.astype(np.float64) - expected
    return (float(np.sqrt((err**2).mean() / (expected**2).mean())),
            float(np.abs(err).max() / np.abs(expected).max()))


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# (N, Cin, H, W, Cout): 3x3 stride-1 pad-1, the shapes whose forward and input gradient take the
# Winograd blocks (16-pixel runs at widths 32 and 64, 8-pixel runs at 16, two tile rows per vector
# at 8; blocks of 3, 2 and 1 tile vectors; an odd number of input channels, paired with a zero one;
# up to 64 channels) and whose weight gradient takes the Winograd chunks from 16 input channels on
# (16, 32, 48 and 64 channels: one, two, three and four channel vectors). 6 x 8 maps: a float32
# forward (the Winograd blocks need heights a multiple of 4 at width 8), the bfloat16 weight gradient.
CASES = [
    (2, 16, 32, 32, 16),
    (4, 32, 16, 16, 32),
    (4, 64, 8, 8, 64),
    (3, 3, 32, 32, 16),
    (2, 5, 16, 16, 8),
    (1, 48, 8, 8, 16),
    (3, 16, 6, 16, 24),
    (1, 16, 2, 64, 8),
    (2, 32, 6, 8, 16),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_bf16_convolution_kernels_match_float64(bf16_variant, case):
    n, cin, h, w, cout = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    xt, wt = t64(x, True), t64(weight, True)
    ref = F.conv2d(xt, wt, padding=1)
    out = lnn.conv2d_forward(x, weight, padding=1, precision="bf16")
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ref.backward(t64(dout))
    dx, dw, _ = lnn.conv2d_backward(dout, x, weight, padding=1, precision="bf16")
    for got, want, what in [(out, ref, "forward"), (dx, xt.grad, "input gradient"), (dw, wt.grad, "weight gradient")]:
        rms, worst = errors(got, want)
        assert rms < TOL_RMS and worst < TOL_MAX, f"{what} ({bf16_variant}): rms {rms:.5f} max {worst:.5f}"
    # bfloat16 did run where the Winograd kernels apply (float32's error is ~1e-7)
    if (w % 16 == 0 and h % 2 == 0) or (w == 8 and h % 4 == 0):
        assert errors(out, ref)[0] > 1e-3
    if cin >= 16 and h % 2 == 0 and w % 2 == 0:
        assert errors(dw, wt.grad)[0] > 1e-3


@pytest.mark.skipif(not NATIVE, reason="the CPU has no AVX512-BF16")
@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: "x".join(map(str, c)))
def test_the_emulated_kernels_give_the_instructions_bits(case):
    """The products of two bfloat16 values are exact in float and both forms add them in vdpbf16ps's
    order, so the emulated variant reproduces the instructions to the bit (no denormals here)."""
    n, cin, h, w, cout = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((n, cout, h, w)).astype(np.float32)
    results = []
    for name in ("avx512_bf16", "bf16_emulated"):
        with kernel_variant(name):
            results.append([lnn.conv2d_forward(x, weight, padding=1, precision="bf16"),
                            *lnn.conv2d_backward(dout, x, weight, padding=1, precision="bf16")[:2]])
    for native, emulated, what in zip(*results, ("forward", "input gradient", "weight gradient")):
        if what == "weight gradient" and cin < 16:
            continue  # float32 (direct) weight gradient: the two variants' float code differs
        assert np.array_equal(native, emulated), what


def test_a_training_step_in_bf16_is_float32s_step_within_tolerance(bf16_variant):
    """One forward (train mode) + softmax cross-entropy + backward of the LADE ResNet-32, bf16 against
    float32 from the same weights and batch. Each convolution adds ~0.004 rms relative error (above);
    31 of them in sequence, each renormalised by its batch norm, compound to sqrt(31) * 0.004 = 0.02 in
    the logits (measured ~0.009 max relative). The gradients are where mixed precision shows: at
    initialisation with random labels each batch norm's backward removes most of its incoming gradient
    (mean and projection on the normalised input), so a small change of the activations is a large
    relative change of what is left. Measured on a Zen 4: the gradient vector differs by 0.19 in
    relative norm (cosine 0.981); PyTorch's autocast(bfloat16) differs from its own float32 by 0.18 on
    this batch, the same order; float32 variants agree to ~1e-6. Tolerances: logits 0.03 (max
    relative), loss 1e-3 (relative), the classifier's gradient 0.02 (relative norm: one layer after the
    pooled features), the whole gradient 0.3 (relative norm) and cosine >= 0.95."""
    from test_models import lade_train_forward_backward

    rng = np.random.default_rng(0)
    images = rng.standard_normal((32, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 100, 32).astype(np.int64)
    runs = {}
    for precision in ("float32", "bf16"):
        net = lade.ResNet32(num_classes=100, seed=0, precision=precision)
        logits, loss = lade_train_forward_backward(net, images, labels)
        runs[precision] = (logits.copy(), loss, net.gradients())
    (l32, loss32, g32), (l16, loss16, g16) = runs["float32"], runs["bf16"]
    assert np.abs(l16 - l32).max() / np.abs(l32).max() < 0.03
    assert abs(loss16 - loss32) / loss32 < 1e-3
    assert np.linalg.norm(g16["fc.weight"] - g32["fc.weight"]) / np.linalg.norm(g32["fc.weight"]) < 0.02
    a = np.concatenate([g.ravel() for g in g32.values()]).astype(np.float64)
    b = np.concatenate([g16[k].ravel() for k in g32]).astype(np.float64)
    assert np.linalg.norm(b - a) / np.linalg.norm(a) < 0.3
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.95
    # and bfloat16 did run
    assert np.linalg.norm(b - a) / np.linalg.norm(a) > 1e-3


def test_bf16_keeps_float32_state_and_evaluates_in_float32(bf16_variant):
    """Parameters, gradients, buffers and the state_dict stay float32 with the same names; eval-mode
    forwards (lade.predict) run in float32, so they match a float32 model's bits; training updates
    the float32 master weights."""
    rng = np.random.default_rng(2)
    images = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 16).astype(np.int64)
    net16 = lade.ResNet32(num_classes=10, seed=1, precision="bf16")
    net32 = lade.ResNet32(num_classes=10, seed=1)
    s16, s32 = net16.state_dict(), net32.state_dict()
    assert list(s16) == list(s32) and all(s16[k].dtype == np.float32 for k in s16)
    assert net16.params.dtype == net16.grads.dtype == np.float32
    assert np.array_equal(lade.predict(net16, images), lade.predict(net32, images))
    before = net16.params.copy()
    lade.train_step(net16, lade.SGD(net16, lr=0.1), images, labels)
    assert not np.array_equal(net16.params, before)
    assert net16.precision == "bf16"


def test_bf16_without_bfloat16_kernels_is_a_named_error(variant_without_bf16):
    with pytest.raises(ValueError, match="precision 'bf16'.*(avx512_bf16|bfloat16)"):
        lade.ResNet32(precision="bf16")
    with pytest.raises(ValueError, match="precision 'bf16'"):
        lnn.conv2d_forward(np.zeros((1, 16, 8, 8), np.float32), np.zeros((16, 16, 3, 3), np.float32), padding=1,
                           precision="bf16")
    net = lade.ResNet32(num_classes=10)
    with pytest.raises(ValueError, match="precision 'bf16'"):
        net.precision = "bf16"
    assert net.precision == "float32"


def test_a_variant_change_after_choosing_bf16_fails_the_step_not_silently(bf16_variant):
    net = lade.ResNet32(num_classes=10, precision="bf16")
    images = np.zeros((4, 3, 32, 32), np.float32)
    lade.set_isa("generic")
    with pytest.raises(ValueError, match="precision 'bf16'.*'generic'|precision 'bf16'.*bfloat16"):
        net.forward(images, train=True)
    lade.set_isa(bf16_variant)
    net.forward(images, train=True)


def test_precision_values_are_checked():
    with pytest.raises(ValueError, match="lade.ResNet32: argument 'precision' must be one of \\['float32', 'bf16'\\], "
                                         "got 'fp16'"):
        lade.ResNet32(precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        lade.ResNet18(num_classes=10, precision="half")
    with pytest.raises(ValueError, match="argument 'precision' must be 'float32' or 'bf16', got 'fp8'"):
        lnn.conv2d_forward(np.zeros((1, 8, 8, 8), np.float32), np.zeros((8, 8, 3, 3), np.float32), precision="fp8")


def test_run_precision_in_configs():
    cfg = config_mod.validate({})
    assert cfg["run"]["precision"] == "float32"
    assert config_mod.validate({"run": {"precision": "bf16"}})["run"]["precision"] == "bf16"
    with pytest.raises(config_mod.ConfigError, match="run.precision.*must be one of \\['float32', 'bf16'\\], got "
                                                     "'float16'"):
        config_mod.validate({"run": {"precision": "float16"}})
