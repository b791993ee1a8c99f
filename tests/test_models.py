"""lade's ResNet-32 models, SGD, schedules and training step against the PyTorch reference.

Tolerances (all errors measured against PyTorch in float64 with the same weights
and inputs, so they are lade's own float32 rounding):
- logits, pooled features, BN running statistics: max|lade - ref| / max|ref| <= 1e-4
  (PyTorch's own float32 model stays below 1e-6 here).
- loss: relative 1e-5.
- every parameter gradient on 4 images of 8x8 pixels: per tensor
  max|lade - ref| / max|ref| <= 1e-4 (PyTorch float32: ~5e-6 over 20 seeds).
- on 8 images of 32x32 a pre-activation within ~1e-6 of zero sits on the other
  side of the ReLU kink in float32 about every second time (PyTorch float32 shows
  per-tensor max errors up to 6e-2 against float64 because of it); there the
  gradients are compared by relative L2 norm: <= 1e-2 over the whole flat
  gradient and <= 0.1 per tensor (observed with PyTorch float32: 3e-3 and 2e-2).
- ten SGD steps (base lr 0.02, gentle enough that no ReLU flip is amplified):
  per-step loss relative 2e-3, final weights and buffers as a flat vector relative
  L2 2e-3 (lade: 3e-5 and 2e-5; PyTorch float32 in a harsher lr-0.05 setting: 7e-4, 5e-4).
- SGD update rule alone, on given gradients: 1e-6 relative to max (exact math).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lade
from torch_reference import ResNet32 as TorchResNet32
from torch_reference import load_numpy_state, numpy_state

VARIANTS = ["lade", "classic"]
FEATURE_DIM = {"lade": 128, "classic": 64}


def rel_err(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def rel_l2(actual, expected):
    actual = np.asarray(actual, dtype=np.float64).ravel()
    expected = np.asarray(expected, dtype=np.float64).ravel()
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def as_numpy(t):
    return t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def assert_close(actual, expected, tol, what):
    expected = as_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: max|lade - ref| / max|ref| = {err:.3g} > {tol:g}"


def randomize_bn(net, rng):
    """BN affine parameters and running statistics away from 1/0/0/1, so that a
    mix-up of weight and bias, or of mean and variance, shows."""
    state = net.state_dict()
    for name, value in state.items():
        if ".bn" not in name and not name.startswith("bn"):
            continue
        c = value.shape[0]
        if name.endswith("weight"):
            state[name] = (1.0 + 0.2 * rng.standard_normal(c)).astype(np.float32)
        elif name.endswith("bias") or name.endswith("running_mean"):
            state[name] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    net.load_state_dict(state)


def lade_and_torch(variant, num_classes=10, seed=0, rng=None):
    net = lade.ResNet32(num_classes=num_classes, variant=variant, seed=seed)
    if rng is not None:
        randomize_bn(net, rng)
    ref = TorchResNet32(num_classes, variant).double()
    load_numpy_state(ref, net.state_dict())
    return net, ref


def random_batch(rng, n, side, num_classes=10):
    images = rng.standard_normal((n, 3, side, side)).astype(np.float32)
    labels = rng.integers(0, num_classes, n).astype(np.int64)
    return images, labels


def torch_train_forward_backward(ref, images, labels):
    ref.train()
    ref.zero_grad()
    features = ref.features(torch.from_numpy(images).double())
    logits = ref.fc(features)
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    return features, logits, loss


def lade_train_forward_backward(net, images, labels):
    logits = net.forward(images, train=True)
    loss, dlogits = lade.losses.softmax_ce(logits, labels)
    net.zero_grad()
    net.backward(dlogits)
    return logits, loss


def buffer_names(net):
    return [k for k in net.state_dict() if k.endswith("running_mean") or k.endswith("running_var")]


# ---------------------------------------------------------------------------------------------------------------
# structure, names, views

@pytest.mark.parametrize("variant,num_classes,expected", [("lade", 100, 550_388), ("lade", 10, 538_778)])
def test_parameter_count_matches_spec(variant, num_classes, expected):
    net = lade.ResNet32(num_classes=num_classes, variant=variant)
    assert net.params.size == expected
    assert net.grads.size == expected
    assert net.buffers.size == 2528


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_classes", [10, 100])
def test_names_and_shapes_match_torch(variant, num_classes):
    net = lade.ResNet32(num_classes=num_classes, variant=variant)
    ref = TorchResNet32(num_classes, variant)
    ref_state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = net.state_dict()
    assert set(state) == set(ref_state), (
        f"names differ: lade only {sorted(set(state) - set(ref_state))}, "
        f"torch only {sorted(set(ref_state) - set(state))}")
    for name, value in state.items():
        assert value.shape == tuple(ref_state[name].shape), f"{name}: {value.shape} vs {tuple(ref_state[name].shape)}"
        assert value.dtype == np.float32, f"{name}: {value.dtype}"
    ref_params = dict(ref.named_parameters())
    assert set(net.parameters()) == set(ref_params)
    assert set(net.gradients()) == set(ref_params)
    assert net.params.size == sum(p.numel() for p in ref.parameters())
    assert net.buffers.size == sum(v.numel() for k, v in ref_state.items() if k not in ref_params)
    assert (net.params.dtype, net.grads.dtype, net.buffers.dtype) == (np.float32,) * 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_and_gradient_views_are_zero_copy(variant):
    net = lade.ResNet32(num_classes=10, variant=variant)
    for flat, views in ((net.params, net.parameters()), (net.grads, net.gradients())):
        assert flat.ndim == 1 and flat.flags.c_contiguous
        # the named views tile the flat buffer exactly once
        flat[:] = np.arange(flat.size, dtype=np.float32)
        seen = np.sort(np.concatenate([v.ravel() for v in views.values()]))
        assert np.array_equal(seen, np.arange(flat.size, dtype=np.float32)), "views do not tile the flat buffer"
        for name, view in views.items():
            assert np.shares_memory(view, flat), f"{name} is not a view of the flat buffer"
    # the flat views are the C buffers themselves: every access sees the same memory
    first, second = net.params, net.params
    assert not first.flags.owndata and first.ctypes.data == second.ctypes.data
    net.params[:] = 0.5
    assert np.all(net.state_dict()["conv1.weight"] == 0.5)


def test_writes_through_params_view_change_the_model(rng):
    net = lade.ResNet32(num_classes=10, variant="lade", seed=1)
    images, _ = random_batch(rng, 3, 8)
    before = net.forward(images, train=False).copy()
    net.parameters()["fc.bias"][:] += 1.0
    after = net.forward(images, train=False)
    # adding 1 to the bias changes each logit by 1 up to one rounding at the logits' magnitude
    np.testing.assert_allclose(after, before + 1.0, rtol=0, atol=4 * np.finfo(np.float32).eps * (np.abs(before).max() + 1))


def test_state_dict_is_a_copy():
    net = lade.ResNet32(num_classes=10)
    state = net.state_dict()
    state["conv1.weight"][:] = 7.0
    state["bn1.running_mean"][:] = 7.0
    assert not np.any(net.state_dict()["conv1.weight"] == 7.0)
    assert not np.any(net.state_dict()["bn1.running_mean"] == 7.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_move_from_torch_to_lade_and_back(rng, variant):
    torch.manual_seed(3)
    ref = TorchResNet32(10, variant)
    with torch.no_grad():
        for name, buf in ref.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    net = lade.ResNet32(num_classes=10, variant=variant, seed=99)
    # torch's own dict of tensors turned into NumPy, num_batches_tracked included (ignored by lade)
    net.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    for name, value in numpy_state(ref).items():
        assert np.array_equal(net.state_dict()[name], value), f"{name} did not load bit-exactly"
    images, _ = random_batch(rng, 4, 16)
    ref.eval()
    with torch.no_grad():
        expected = ref.double()(torch.from_numpy(images).double())
    assert_close(net.forward(images, train=False), expected, 1e-4, "logits after torch -> lade")
    # and back: lade -> a fresh torch model, strict apart from num_batches_tracked
    back = TorchResNet32(10, variant)
    result = back.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()}, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    for name, value in numpy_state(back).items():
        assert np.array_equal(value, numpy_state(ref)[name]), f"{name} changed on the way back"


def test_load_state_dict_rejects_bad_dicts():
    net = lade.ResNet32(num_classes=10)
    good = net.state_dict()
    before = net.params.copy()
    missing = dict(good)
    del missing["layer2.3.bn1.running_var"]
    with pytest.raises((KeyError, ValueError), match="layer2.3.bn1.running_var"):
        net.load_state_dict(missing)
    extra = dict(good, **{"layer9.0.conv1.weight": np.zeros((16, 16, 3, 3), np.float32)})
    with pytest.raises((KeyError, ValueError), match="layer9.0.conv1.weight"):
        net.load_state_dict(extra)
    wrong_shape = dict(good, **{"fc.weight": np.zeros((10, 64), np.float32)})
    with pytest.raises(ValueError, match="fc.weight"):
        net.load_state_dict(wrong_shape)
    assert np.array_equal(net.params, before)
    net.load_state_dict(dict(good, **{"bn1.num_batches_tracked": np.array(5)}))


# ---------------------------------------------------------------------------------------------------------------
# initialisation

@pytest.mark.parametrize("variant", VARIANTS)
def test_init_is_deterministic_per_seed(variant):
    a = lade.ResNet32(num_classes=100, variant=variant, seed=0)
    b = lade.ResNet32(num_classes=100, variant=variant, seed=0)
    c = lade.ResNet32(num_classes=100, variant=variant, seed=1)
    assert np.array_equal(a.params, b.params), "same seed gave different weights"
    assert np.array_equal(a.buffers, b.buffers)
    pa, pc = a.parameters(), c.parameters()
    for name in pa:
        if name.endswith("conv1.weight") or name.endswith("conv2.weight") or name == "fc.weight":
            assert not np.array_equal(pa[name], pc[name]), f"{name} is the same for seeds 0 and 1"
    assert not np.any(np.isnan(a.params))


@pytest.mark.parametrize("variant", VARIANTS)
def test_init_statistics(variant):
    net = lade.ResNet32(num_classes=100, variant=variant, seed=4)
    params = net.parameters()
    wide = []
    for name, w in params.items():
        if w.ndim == 4:
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            expected = math.sqrt(2.0 / fan_in)  # Kaiming normal, fan_in, gain sqrt(2)
            n = w.size
            # 5 standard errors of the sample std and mean of n normal draws
            assert abs(w.std() / expected - 1) < 5 / math.sqrt(2 * n), f"{name}: std {w.std():.4g} vs {expected:.4g}"
            assert abs(w.mean()) < 5 * expected / math.sqrt(n), f"{name}: mean {w.mean():.3g}"
            if w.shape[0] == 64:
                wide.append(w.ravel() / expected)
        elif ".bn" in name or name.startswith("bn"):
            target = 1.0 if name.endswith("weight") else 0.0
            assert np.all(params[name] == target), f"{name} must start at {target}"
    # normal, not uniform: kurtosis 3 (a uniform init would give 1.8)
    z = np.concatenate(wide).astype(np.float64)
    kurtosis = np.mean(z ** 4) / np.mean(z ** 2) ** 2
    assert 2.85 < kurtosis < 3.15, f"conv weights' kurtosis {kurtosis:.3f}, a normal has 3"
    bound = 1 / math.sqrt(FEATURE_DIM[variant])
    fc_w, fc_b = params["fc.weight"], params["fc.bias"]
    assert np.abs(fc_w).max() <= bound and np.abs(fc_b).max() <= bound
    assert np.abs(fc_w).max() > 0.99 * bound, "fc.weight does not fill uniform(-b, b)"
    assert abs(fc_w.std() / (bound / math.sqrt(3)) - 1) < 0.05
    assert fc_b.std() > 0.3 * bound, "fc.bias must be uniform(-b, b), not zero"
    state = net.state_dict()
    for name in buffer_names(net):
        assert np.all(state[name] == (0.0 if name.endswith("mean") else 1.0)), name


# ---------------------------------------------------------------------------------------------------------------
# forward and backward against PyTorch

@pytest.mark.parametrize("variant", VARIANTS)
def test_train_forward_backward_match_torch_every_gradient(rng, variant):
    net, ref = lade_and_torch(variant, seed=2, rng=rng)
    images, labels = random_batch(rng, 4, 8)
    features, ref_logits, ref_loss = torch_train_forward_backward(ref, images, labels)
    logits, loss = lade_train_forward_backward(net, images, labels)
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    assert_close(logits, ref_logits, 1e-4, "train logits")
    assert_close(net.features, features, 1e-4, "pooled features")
    assert abs(loss - ref_loss.item()) <= 1e-5 * abs(ref_loss.item()), f"loss {loss} vs {ref_loss.item()}"
    ref_params = dict(ref.named_parameters())
    for name, grad in net.gradients().items():
        assert_close(grad, ref_params[name].grad, 1e-4, f"gradient of {name}")
    # the train forward moved the running statistics like PyTorch
    ref_state = ref.state_dict()
    state = net.state_dict()
    for name in buffer_names(net):
        assert_close(state[name], ref_state[name], 1e-4, f"{name} after a train forward")


@pytest.mark.parametrize("variant", VARIANTS)
def test_full_size_batch_matches_torch(rng, variant):
    net, ref = lade_and_torch(variant, num_classes=100, seed=5, rng=rng)
    images, labels = random_batch(rng, 8, 32, num_classes=100)
    features, ref_logits, ref_loss = torch_train_forward_backward(ref, images, labels)
    logits, loss = lade_train_forward_backward(net, images, labels)
    assert_close(logits, ref_logits, 1e-4, "train logits 32x32")
    assert_close(net.features, features, 1e-4, "pooled features 32x32")
    assert abs(loss - ref_loss.item()) <= 1e-5 * abs(ref_loss.item()), f"loss {loss} vs {ref_loss.item()}"
    ref_params = dict(ref.named_parameters())
    grads = net.gradients()
    flat = np.concatenate([grads[k].ravel() for k in ref_params])
    flat_ref = np.concatenate([as_numpy(p.grad).ravel() for p in ref_params.values()])
    assert rel_l2(flat, flat_ref) <= 1e-2, f"whole gradient relative L2 {rel_l2(flat, flat_ref):.3g}"
    for name, p in ref_params.items():
        err = rel_l2(grads[name], as_numpy(p.grad))
        assert err <= 0.1, f"gradient of {name}: relative L2 {err:.3g}"
    for name in buffer_names(net):
        assert_close(net.state_dict()[name], ref.state_dict()[name], 1e-4, f"{name} after a train forward")


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_forward_matches_torch_and_keeps_buffers(rng, variant):
    net, ref = lade_and_torch(variant, seed=3, rng=rng)
    images, _ = random_batch(rng, 5, 12)
    buffers = net.buffers.copy()
    ref.eval()
    with torch.no_grad():
        features = ref.features(torch.from_numpy(images).double())
        expected = ref.fc(features)
    out = np.empty((5, 10), np.float32)
    logits = net.forward(images, train=False, out=out)
    assert logits is out
    assert_close(out, expected, 1e-4, "eval logits")
    assert_close(net.features, features, 1e-4, "eval pooled features")
    assert np.array_equal(net.buffers, buffers), "an eval forward changed the running statistics"
    assert_close(lade.predict(net, images, batch_size=2), expected, 1e-4, "lade.predict logits")
    assert np.array_equal(net.buffers, buffers), "lade.predict changed the running statistics"


def test_predict_does_not_depend_on_batch_size(rng):
    net = lade.ResNet32(num_classes=10, seed=8)
    randomize_bn(net, rng)
    images, _ = random_batch(rng, 7, 16)
    whole = lade.predict(net, images, batch_size=256)
    assert whole.shape == (7, 10)
    assert_close(lade.predict(net, images, batch_size=3), whole, 1e-5, "predict in batches of 3")
    assert_close(lade.predict(net, images, batch_size=1), whole, 1e-5, "predict in batches of 1")


def test_backward_accumulates_and_zero_grad_clears(rng):
    net = lade.ResNet32(num_classes=10, seed=6)
    images, labels = random_batch(rng, 4, 8)
    logits = net.forward(images, train=True)
    _, dlogits = lade.losses.softmax_ce(logits, labels)
    net.zero_grad()
    assert not net.grads.any()
    net.backward(dlogits)
    once = net.grads.copy()
    assert np.abs(once).max() > 0
    net.backward(dlogits)
    assert_close(net.grads, 2.0 * once.astype(np.float64), 1e-6, "two backward calls")
    net.zero_grad()
    assert not net.grads.any()


def test_thread_count_is_settable_and_results_agree(rng):
    images, labels = random_batch(rng, 8, 16)
    previous = lade.get_num_threads()
    try:
        results = {}
        for threads in (1, 2):
            lade.set_num_threads(threads)
            assert lade.get_num_threads() == threads
            net = lade.ResNet32(num_classes=10, seed=6)  # the same start for both thread counts
            logits = net.forward(images, train=False).copy()
            lade_train_forward_backward(net, images, labels)
            results[threads] = (logits, net.grads.copy(), net.buffers.copy())
        assert_close(results[2][0], results[1][0], 1e-5, "eval logits with 2 threads vs 1")
        assert rel_l2(results[2][1], results[1][1]) < 1e-3, "gradients with 2 threads vs 1"
        assert_close(results[2][2], results[1][2], 1e-5, "running statistics with 2 threads vs 1")
    finally:
        lade.set_num_threads(previous)


def test_profile_reports_layer_times(rng):
    net = lade.ResNet32(num_classes=10, seed=6)
    opt = lade.SGD(net, lr=0.01)
    images, labels = random_batch(rng, 8, 16)
    net.profile_reset()
    assert all(v == 0 for v in net.profile().values())
    lade.train_step(net, opt, images, labels)
    profile = net.profile()
    assert len(profile) >= 4 and all(isinstance(k, str) for k in profile)
    assert all(v >= 0 for v in profile.values())
    assert sum(profile.values()) > 0
    net.profile_reset()
    assert all(v == 0 for v in net.profile().values())


# ---------------------------------------------------------------------------------------------------------------
# loss

@pytest.mark.parametrize("n,classes", [(1, 2), (7, 10), (64, 100)])
def test_softmax_ce_matches_torch(rng, n, classes):
    logits = (3 * rng.standard_normal((n, classes))).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.int64)
    lt = torch.tensor(logits.astype(np.float64), requires_grad=True)
    ref = F.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    grad = np.full((n, classes), 123.0, np.float32)  # overwritten, not accumulated
    loss, result = lade.losses.softmax_ce(logits, labels, grad=grad)
    assert result is grad
    assert abs(loss - ref.item()) <= 1e-6 * max(1.0, abs(ref.item()))
    assert_close(grad, lt.grad, 1e-5, "softmax_ce gradient")
    loss2, fresh = lade.losses.softmax_ce(logits, labels)
    assert loss2 == loss and np.array_equal(fresh, grad)


def test_softmax_ce_is_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [50.0, 60.0, 70.0]], np.float32)
    labels = np.array([1, 2], np.int64)
    loss, grad = lade.losses.softmax_ce(logits, labels)
    # row 0: LSE = 1000 + log(1 + e^-1000 + e^-2000), minus z_1 = 0; row 1: LSE = 70 + log(1 + e^-10 + e^-20), minus 70
    expected = (1000.0 + math.log1p(math.exp(-1000) + math.exp(-2000)) + math.log1p(math.exp(-10) + math.exp(-20))) / 2
    assert math.isclose(loss, expected, rel_tol=1e-6)
    assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------------------------------------------
# SGD and schedules

def torch_sgd_reference(params, grads_per_step, lrs, **config):
    tensors = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in params]
    opt = torch.optim.SGD(tensors, lr=lrs[0], **config)
    for grads, lr in zip(grads_per_step, lrs):
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.astype(np.float64))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    velocity = [opt.state[t]["momentum_buffer"].numpy() for t in tensors] if config.get("momentum") else None
    return [t.detach().numpy() for t in tensors], velocity


@pytest.mark.parametrize("config", [
    dict(momentum=0.9, weight_decay=5e-4),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=True),
    dict(momentum=0.5, weight_decay=1e-2, dampening=0.3),
    dict(momentum=0.0, weight_decay=0.0),
], ids=["default", "nesterov", "dampening", "plain"])
def test_sgd_step_matches_torch(rng, config):
    net = lade.ResNet32(num_classes=10, variant="classic", seed=11)
    names = list(net.parameters())
    start = [net.parameters()[k].copy() for k in names]
    lrs = [0.1, 0.1, 0.05, 0.2]
    steps = [[rng.standard_normal(p.shape).astype(np.float32) for p in start] for _ in lrs]
    opt = lade.SGD(net, lr=0.1, **config)
    for i, (grads, lr) in enumerate(zip(steps, lrs)):
        views = net.gradients()
        for k, g in zip(names, grads):
            views[k][...] = g
        opt.step(lr=None if i < 2 else lr)  # None: the optimiser's own lr
    expected, velocity = torch_sgd_reference(start, steps, lrs, **config)
    got = net.parameters()
    for k, e in zip(names, expected):
        assert_close(got[k], e, 1e-6, f"{k} after 4 SGD steps")
    if velocity is not None:
        assert opt.velocity.shape == net.params.shape
        assert_close(opt.velocity, reorder_like_params(net, names, velocity), 1e-6, "momentum buffer")


def reorder_like_params(net, names, per_tensor):
    """Puts per-tensor arrays into one flat array laid out like net.params."""
    flat = np.zeros(net.params.size)
    base = net.params.ctypes.data
    for name, value in zip(names, per_tensor):
        view = net.parameters()[name]
        offset = (view.ctypes.data - base) // 4
        flat[offset:offset + view.size] = value.ravel()
    return flat


def test_sgd_rejects_non_finite_gradients_without_touching_anything(rng):
    net = lade.ResNet32(num_classes=10, seed=12)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    net.grads[:] = rng.standard_normal(net.grads.size).astype(np.float32)
    opt.step()
    params, velocity = net.params.copy(), opt.velocity.copy()
    for bad in (np.nan, np.inf):
        net.grads[12345] = bad
        with pytest.raises(FloatingPointError):
            opt.step()
        assert np.array_equal(net.params, params), "params changed by a rejected step"
        assert np.array_equal(opt.velocity, velocity), "velocity changed by a rejected step"


def recipe_schedule():
    """The warmup-multistep options of the shipped recipe, from their one owner (the config schema)."""
    from lade.app.config import DEFAULTS
    optim = {key: default for key, (_, default) in DEFAULTS["optim"].items()}
    return dict(warmup_epochs=optim["warmup_epochs"], warmup_start=optim["warmup_start"],
                milestones=optim["milestones"], factor=optim["lr_factor"])


def test_warmup_multistep_schedule_spec_values():
    # lade-spec.md §5.1: base 0.2, 5 warmup epochs from 1/3, x0.01 at epochs 120 and 160
    table = {1: 0.09333, 2: 0.12, 3: 0.14667, 4: 0.17333, 5: 0.2, 60: 0.2, 119: 0.2,
             120: 0.002, 140: 0.002, 159: 0.002, 160: 0.00002, 200: 0.00002}
    for epoch, value in table.items():
        got = lade.warmup_multistep_lr(0.2, epoch, **recipe_schedule())
        assert math.isclose(got, value, rel_tol=5e-5), f"epoch {epoch}: {got} vs {value}"
        w = (1 / 3) * (1 - epoch / 5) + epoch / 5 if epoch < 5 else 1.0
        exact = 0.2 * w * 0.01 ** sum(epoch >= m for m in (120, 160))
        assert math.isclose(got, exact, rel_tol=1e-9), f"epoch {epoch}: {got} vs {exact}"


def test_warmup_multistep_schedule_options():
    lr = [lade.warmup_multistep_lr(1.0, e, warmup_epochs=2, warmup_start=0.5, milestones=(4, 6), factor=0.1)
          for e in range(1, 8)]
    assert np.allclose(lr, [0.75, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-12, atol=0)


@pytest.mark.parametrize("eta_min", [0.0, 0.001])
def test_cosine_schedule_matches_torch(eta_min):
    total, base = 30, 0.05
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
    for epoch in range(total + 1):
        expected = eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / total)) / 2
        got = lade.cosine_lr(base, epoch, total, eta_min=eta_min)
        assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-15), f"epoch {epoch}: {got} vs {expected}"
        assert math.isclose(got, opt.param_groups[0]["lr"], rel_tol=1e-6, abs_tol=1e-12)
        opt.step()
        sched.step()


# ---------------------------------------------------------------------------------------------------------------
# training steps

def structured_batches(rng, count, n, side, classes=10):
    """Images = class template + noise, so that ten steps learn smoothly."""
    templates = rng.standard_normal((classes, 3, side, side))
    batches = []
    for _ in range(count):
        labels = rng.integers(0, classes, n).astype(np.int64)
        images = (0.7 * rng.standard_normal((n, 3, side, side)) + templates[labels]).astype(np.float32)
        batches.append((images, labels))
    return batches


@pytest.mark.parametrize("variant,nesterov", [("lade", False), ("lade", True), ("classic", False)])
def test_ten_sgd_steps_track_torch(rng, variant, nesterov):
    base_lr = 0.02
    net, ref = lade_and_torch(variant, seed=21)
    opt = lade.SGD(net, lr=base_lr, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=base_lr, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    batches = structured_batches(rng, 2, 8, 8)
    # warmup over 3 steps from 1/3, then x0.1 at steps 5 and 8: the ten steps cross every phase
    lrs = [lade.warmup_multistep_lr(base_lr, step, warmup_epochs=3, warmup_start=1 / 3, milestones=(5, 8), factor=0.1)
           for step in range(1, 11)]
    assert np.allclose(lrs, base_lr * np.array([5 / 9, 7 / 9, 1, 1, .1, .1, .1, .01, .01, .01]), rtol=1e-12)
    losses, ref_losses = [], []
    for step, lr in enumerate(lrs):
        images, labels = batches[step % 2]
        losses.append(lade.train_step(net, opt, images, labels, lr=lr))
        for group in ref_opt.param_groups:
            group["lr"] = lr
        ref_opt.zero_grad()
        ref.train()
        loss = F.cross_entropy(ref(torch.from_numpy(images).double()), torch.from_numpy(labels))
        loss.backward()
        ref_opt.step()
        ref_losses.append(loss.item())
    assert all(isinstance(x, float) for x in losses)
    rel = np.abs(np.array(losses) - ref_losses) / np.abs(ref_losses)
    assert rel.max() <= 2e-3, f"losses lade {np.round(losses, 5)} torch {np.round(ref_losses, 5)}"
    assert losses[-1] < losses[0], "ten steps did not lower the loss"
    ref_state = numpy_state(ref)
    state = net.state_dict()
    err = rel_l2(np.concatenate([state[k].ravel() for k in ref_state]),
                 np.concatenate([v.ravel() for v in ref_state.values()]))
    print(f"ten steps {variant} nesterov={nesterov}: loss rel err {rel.max():.2g}, weights rel L2 {err:.2g}")
    assert err <= 2e-3, f"weights and buffers after ten steps: relative L2 {err:.3g}"


def test_train_step_uses_the_optimiser_lr_by_default(rng):
    net_a = lade.ResNet32(num_classes=10, seed=30)
    net_b = lade.ResNet32(num_classes=10, seed=30)
    opt_a = lade.SGD(net_a, lr=0.03, momentum=0.9)
    opt_b = lade.SGD(net_b, lr=1.0, momentum=0.9)
    images, labels = random_batch(rng, 4, 8)
    loss_a = lade.train_step(net_a, opt_a, images, labels)
    loss_b = lade.train_step(net_b, opt_b, images, labels, lr=0.03, loss=lade.losses.softmax_ce)
    assert loss_a == loss_b
    assert np.array_equal(net_a.params, net_b.params)
    assert np.array_equal(net_a.buffers, net_b.buffers)


@pytest.mark.parametrize("poison", ["nan_image", "inf_logit"])
def test_non_finite_loss_stops_before_weights_and_buffers_change(rng, poison):
    net = lade.ResNet32(num_classes=10, seed=31)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = random_batch(rng, 4, 8)
    lade.train_step(net, opt, images, labels)  # a normal step first: non-zero velocity and moved buffers
    bad_images = images.copy()
    if poison == "nan_image":
        bad_images[1, 2, 3, 4] = np.nan
    else:
        net.parameters()["fc.bias"][3] = np.inf
    params, buffers, velocity = net.params.copy(), net.buffers.copy(), opt.velocity.copy()
    with pytest.raises(FloatingPointError):
        lade.train_step(net, opt, bad_images, labels)
    assert np.array_equal(net.params, params, equal_nan=True), "weights changed by a non-finite step"
    assert np.array_equal(net.buffers, buffers), "BN running statistics changed by a non-finite step"
    assert np.array_equal(opt.velocity, velocity), "velocity changed by a non-finite step"
    if poison == "nan_image":
        # the model is still usable afterwards
        assert math.isfinite(lade.train_step(net, opt, images, labels))


def test_train_step_reduce_gradients_acts_on_the_flat_buffer_before_the_update(rng):
    """reduce_gradients(model.grads) runs after backward, before the optimiser: doubling the gradient
    there is the same update as doubling lr (no momentum, no weight decay)."""
    images, labels = random_batch(rng, 4, 8)
    net_a, net_b = lade.ResNet32(num_classes=10, seed=5), lade.ResNet32(num_classes=10, seed=5)
    opt_a = lade.SGD(net_a, lr=0.05, momentum=0.0, weight_decay=0.0)
    opt_b = lade.SGD(net_b, lr=0.1, momentum=0.0, weight_decay=0.0)
    seen = []

    def double(grads):
        assert grads is net_a.grads or np.shares_memory(grads, net_a.grads)
        seen.append(float(np.abs(grads).sum()))
        grads *= 2

    loss_a, logits = lade.train_step(net_a, opt_a, images, labels, reduce_gradients=double, return_logits=True)
    loss_b = lade.train_step(net_b, opt_b, images, labels)
    assert seen and seen[0] > 0 and loss_a == loss_b
    assert logits.shape == (len(labels), 10) and np.isfinite(logits).all()
    np.testing.assert_allclose(net_a.params, net_b.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(net_a.buffers, net_b.buffers)
    # the logits are the batch's training-mode forward: the same loss recomputed from them
    assert lade.losses.softmax_ce(logits, labels)[0] == pytest.approx(loss_a, rel=1e-6)


def test_a_failing_reduce_gradients_changes_nothing(rng):
    net = lade.ResNet32(num_classes=10, seed=6)
    opt = lade.SGD(net, lr=0.1, momentum=0.9, weight_decay=5e-4)
    images, labels = random_batch(rng, 4, 8)
    lade.train_step(net, opt, images, labels)
    params, buffers, velocity = net.params.copy(), net.buffers.copy(), opt.velocity.copy()

    def poison(grads):
        grads[7] = np.nan  # e.g. a peer process sent a non-finite gradient
    with pytest.raises(FloatingPointError):
        lade.train_step(net, opt, images, labels, reduce_gradients=poison)
    assert np.array_equal(net.params, params) and np.array_equal(net.buffers, buffers)
    assert np.array_equal(opt.velocity, velocity) and opt.steps == 1


# ---------------------------------------------------------------------------------------------------------------
# training on real data

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
CIFAR_STD = np.array([0.2023, 0.1994, 0.2010], np.float32).reshape(1, 3, 1, 1)


def normalise(images_uint8):
    return np.ascontiguousarray((images_uint8.astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD)


@pytest.mark.slow
def test_training_on_cifar100_subset_learns(cifar100):
    """200 SGD steps of batch 64 on the first 20 CIFAR-100 classes (10,000 train
    images, 1.3 epochs): the loss falls and test accuracy is far above the 5 % of
    chance. With this recipe PyTorch reaches 21 % (loss 3.40 -> 2.47) and lade 26 %
    (3.22 -> 2.43); the bar is 15 %."""
    classes, steps, batch = 20, 200, 64
    train_images, train_fine, _ = cifar100["train"]
    test_images, test_fine, _ = cifar100["test"]
    keep = train_fine < classes
    x_train, y_train = normalise(train_images[keep]), train_fine[keep]
    keep = test_fine < classes
    x_test, y_test = normalise(test_images[keep]), test_fine[keep]
    assert len(y_train) == 500 * classes and len(y_test) == 100 * classes

    net = lade.ResNet32(num_classes=classes, variant="lade", seed=0)
    opt = lade.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    order_rng = np.random.default_rng(0)
    order = np.concatenate([order_rng.permutation(len(y_train)) for _ in range(2)])
    losses = []
    for step in range(steps):
        idx = np.sort(order[step * batch:(step + 1) * batch])
        lr = 0.05 * min(1.0, (step + 1) / 20)  # short linear warmup
        losses.append(lade.train_step(net, opt, np.ascontiguousarray(x_train[idx]), y_train[idx], lr=lr))
    first, last = np.mean(losses[:20]), np.mean(losses[-50:])
    accuracy = float(np.mean(lade.predict(net, x_test, batch_size=500).argmax(axis=1) == y_test))
    print(f"CIFAR-100 20-class smoke: loss {first:.3f} -> {last:.3f}, test accuracy {accuracy:.3f}")
    assert last < first - 0.5, f"loss did not fall: first 20 steps {first:.3f}, last 50 {last:.3f}"
    assert last < math.log(classes) - 0.3, f"final loss {last:.3f} not below chance level {math.log(classes):.3f}"
    assert accuracy > 0.15, f"test accuracy {accuracy:.3f}, chance is {1 / classes:.3f}"

