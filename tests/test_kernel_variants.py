"""Every kernel variant this CPU can run (lade.cpu_info()['supported']) against
PyTorch in float64: the direct convolutions (forward, input and weight
gradients; 8- and 16-pixel runs, odd heights and widths that fall back to
im2col) and batch norm. Plus: a variant the CPU lacks is refused, through
lade.set_isa and through LADE_ISA at import, and never runs."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lade
import lade.nn as lnn
from conftest import kernel_variant

VARIANTS = lade.cpu_info()["supported"].split()
ALL_VARIANTS = ["avx512_bf16", "avx512", "avx2", "generic", "w16_avx2", "bf16_emulated"]
TOL = 5e-5  # max |lade - float64 reference| / max |reference|


@pytest.fixture(params=VARIANTS)
def variant(request):
    with kernel_variant(request.param):
        yield request.param


def rel_err(actual, expected):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max())


def t64(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# (N, Cin, H, W, Cout, kernel, stride, padding): output widths of 8, 16, 32, 48
# take the direct kernels (16-pixel runs where the variant has 16-float vectors
# and the row allows), stride 2 included (odd inputs: an odd padded width split
# into its two column phases; the input gradient of a 3x3 stride-2 convolution
# as four phase correlations, odd heights and widths dropping the last phase
# row or column); the others go through im2col. Batch-wide pixel
# counts that are not a multiple of the tile leave a last tile of 1 or 2 runs.
# 3x3 stride-1 pad-1 with an even output height and a width a multiple of 16
# take Winograd F(2x2, 3x3) (up to 64 input channels; the input gradient too
# when cin is a multiple of the channel tile): blocks of 3, 2 and 1 tile
# vectors, 16- and 32-pixel groups, odd cin, cin 64, and 65 falling back;
# 8-pixel rows put two tile rows into a vector (heights a multiple of 4; 6
# falls back). The weight gradient is Winograd from 32 input channels on (even
# heights and widths): rows of 8 and 16 tiles read the output gradient a vector
# at a time (8 and 16 lanes), narrower rows and a last chunk of 16 tiles lane by lane.
CASES = [
    (2, 16, 32, 32, 16, 3, 1, 1),
    (3, 5, 6, 32, 8, 3, 1, 1),
    (1, 8, 4, 16, 8, 3, 1, 1),
    (1, 64, 2, 16, 64, 3, 1, 1),
    (2, 65, 4, 16, 8, 3, 1, 1),
    (2, 8, 10, 64, 24, 3, 1, 1),
    (2, 8, 8, 8, 8, 3, 1, 1),
    (1, 16, 4, 8, 16, 3, 1, 1),
    (3, 64, 12, 8, 64, 3, 1, 1),
    (2, 8, 6, 8, 8, 3, 1, 1),
    (3, 5, 7, 16, 8, 3, 1, 1),
    (2, 3, 3, 16, 16, 3, 1, 1),
    (2, 4, 5, 48, 8, 3, 1, 1),
    (4, 32, 8, 8, 64, 3, 1, 1),
    (3, 32, 2, 32, 8, 3, 1, 1),
    (2, 6, 9, 13, 8, 3, 1, 1),
    (2, 16, 32, 32, 32, 3, 2, 1),
    (3, 4, 15, 15, 8, 3, 2, 1),
    (2, 8, 17, 31, 16, 3, 2, 1),
    (3, 16, 16, 15, 8, 3, 2, 1),
    (2, 8, 9, 64, 8, 3, 2, 1),
    (2, 8, 16, 16, 8, 1, 2, 0),
    (2, 3, 8, 16, 8, 5, 1, 2),
    (2, 8, 6, 16, 8, 1, 1, 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_forward_and_backward_match_torch(variant, case):
    n, cin, h, w, cout, k, stride, pad = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    weight = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    xt, wt, bt = t64(x, True), t64(weight, True), t64(bias, True)
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=pad)
    out = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=pad)
    assert rel_err(out, ref) < TOL, f"forward ({variant})"
    dout = rng.standard_normal(out.shape).astype(np.float32)
    ref.backward(t64(dout))
    dx, dw, db = lnn.conv2d_backward(dout, x, weight, stride=stride, padding=pad)
    assert rel_err(dx, xt.grad) < TOL, f"input gradient ({variant})"
    assert rel_err(dw, wt.grad) < TOL, f"weight gradient ({variant})"
    assert rel_err(db, bt.grad) < TOL, f"bias gradient ({variant})"
    naive = lnn.conv2d_forward(x, weight, bias, stride=stride, padding=pad, naive=True)
    assert rel_err(out, naive) < TOL, f"forward vs naive ({variant})"


@pytest.mark.parametrize("shape", [(4, 3, 5, 3), (2, 5, 5, 8), (3, 4, 32, 32), (5, 2, 7, 9)], ids=str)
def test_batchnorm_matches_torch(variant, shape):
    rng = np.random.default_rng(7)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(c)).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    xt, gt, bt = t64(x, True), t64(gamma, True), t64(beta, True)
    ref = F.batch_norm(xt, None, None, gt, bt, training=True)
    out, mean, invstd = lnn.batchnorm2d_forward_train(x, gamma, beta)
    assert rel_err(out, ref) < TOL, f"forward ({variant})"
    dout = rng.standard_normal(shape).astype(np.float32)
    ref.backward(t64(dout))
    dx, dgamma, dbeta = lnn.batchnorm2d_backward(dout, x, gamma, mean, invstd)
    for got, want, name in [(dx, xt.grad, "dx"), (dgamma, gt.grad, "dgamma"), (dbeta, bt.grad, "dbeta")]:
        assert rel_err(got, want) < TOL, f"{name} ({variant})"
    rmean, rvar = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    ref_eval = F.batch_norm(t64(x), t64(rmean), t64(rvar), t64(gamma), t64(beta), training=False)
    assert rel_err(lnn.batchnorm2d_forward_eval(x, gamma, beta, rmean, rvar), ref_eval) < TOL, f"eval ({variant})"


def test_resnet_gradients_match_torch(variant):
    """The whole model's training step on each variant: every gradient, through the fused passes (BN backward
    with the ReLU mask, the identity shortcut's gradient taken in the same pass, the option-A shortcut)."""
    from test_models import lade_and_torch, lade_train_forward_backward, random_batch, torch_train_forward_backward
    rng = np.random.default_rng(11)
    net, ref = lade_and_torch("lade", seed=3)
    images, labels = random_batch(rng, 4, 16)
    torch_train_forward_backward(ref, images, labels)
    lade_train_forward_backward(net, images, labels)
    ref_params = dict(ref.named_parameters())
    for name, grad in net.gradients().items():
        assert rel_err(grad, ref_params[name].grad) < 1e-4, f"gradient of {name} ({variant})"


def test_a_variant_repeats_its_bits(variant):
    """Same variant, same input, same thread count: the same bits (the
    reproducibility docs/performance.md promises)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    weight = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    first = [lnn.conv2d_forward(x, weight, None, padding=1)] + list(lnn.conv2d_backward(x, x, weight, padding=1))
    again = [lnn.conv2d_forward(x, weight, None, padding=1)] + list(lnn.conv2d_backward(x, x, weight, padding=1))
    for a, b in zip(first, again):
        assert np.array_equal(a, b)


def test_cpu_info_reports_the_variant_in_use():
    info = lade.cpu_info()
    assert info["model"]
    assert info["variant"] in info["supported"].split()
    assert "generic" in info["supported"].split()
    assert info["vector_floats"] in (8, 16)
    assert "bf16_emulated" in info["supported"].split() and VARIANTS[0] != "bf16_emulated"
    if "avx512bf16" in info["features"].split() and "avx512_bf16" in info["supported"].split():
        assert VARIANTS[0] == "avx512_bf16"
    elif "avx512f" in info["features"].split() and "avx512" in info["supported"].split():
        assert VARIANTS[0] == "avx512"


def test_cpu_info_names_the_family_and_model_numbers():
    """run.json and the zoo name the CPU by this string: a brand like "AMD EPYC" names no generation, so the
    family and model numbers follow it, as lscpu prints them (decimal)."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.is_file():
        pytest.skip("cpuid family and model numbers are x86's; /proc/cpuinfo is Linux's")
    lines = cpuinfo.read_text().splitlines()[:30]
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    family, model = int(fields["cpu family"]), int(fields["model"])
    assert lade.cpu_info()["model"].endswith(f" (family {family} model {model})"), lade.cpu_info()["model"]


def test_an_unsupported_or_unknown_variant_is_refused():
    before = lade.cpu_info()["variant"]
    for name in [v for v in ALL_VARIANTS if v not in VARIANTS] + ["sse9"]:
        with pytest.raises(ValueError, match=f"lade.set_isa: .*'{name}'.*supports: {' '.join(VARIANTS)}"):
            lade.set_isa(name)
        assert lade.cpu_info()["variant"] == before
    with pytest.raises(TypeError, match="set_isa"):
        lade.set_isa(2)


def run_import(isa):
    env = dict(os.environ, LADE_ISA=isa)
    return subprocess.run([sys.executable, "-c", "import lade; print(lade.cpu_info()['variant'])"], env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("name", [v for v in ALL_VARIANTS if v not in VARIANTS] + ["sse9"])
def test_lade_isa_for_a_variant_the_cpu_lacks_fails_the_import(name):
    result = run_import(name)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert f"LADE_ISA={name}" in message and f"supports: {' '.join(VARIANTS)}" in message, message
    assert "Traceback" in result.stderr and "ValueError" in message  # an exception, not a signal


def test_lade_isa_forces_the_variant():
    for name in VARIANTS:
        result = run_import(name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name


WORKER_STACK_SCRIPT = """
import threading
threading.stack_size(16 << 20)  # the calling thread's own stack is large: only the pool's workers are left


def run():
    import numpy as np
    import lade
    import lade.nn as lnn
    lade.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    for variant in lade.cpu_info()["supported"].split():
        lade.set_isa(variant)
        for _ in range(10):
            lnn.conv2d_forward(x, w, None, stride=1, padding=1)
    print("done")


t = threading.Thread(target=run)
t.start()
t.join()
"""


def test_the_pool_workers_do_not_depend_on_the_stack_limit():
    """The Winograd kernels keep a block of up to 192 KB on the stack. Threads take their default
    stack size from RLIMIT_STACK, so the pool sizes its workers' stacks itself: under a 100 KB limit
    (a worker would overflow with the default) every variant runs."""
    from conftest import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LADE_ISA", None)
    # the limit is set by a shell (not preexec_fn, unsafe with this process's own threads)
    r = subprocess.run(["bash", "-c", 'ulimit -s 100 && exec "$0" -c "$1"', sys.executable, WORKER_STACK_SCRIPT],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "done", (r.returncode, r.stderr[-2000:])
