"""Hostile input to the public API (issue 11): every call returns a correct result or raises an
error whose message starts with lade's function name; nothing is half-done (all-or-nothing
loads) and nothing silently wrong (NaN priors, truncated counts, schedules past their end)."""
import io

import numpy as np
import pytest
from PIL import Image

import lade
from lade import data, metrics, nn, prior_shift, priors, sampling


@pytest.mark.parametrize("call, func", [
    (lambda: nn.ResNet32(seed=-1), "lade.ResNet32.init"),
    (lambda: nn.ResNet32(seed=2 ** 64), "lade.ResNet32.init"),
    (lambda: nn.ResNet32(seed=1.5), "lade.ResNet32.init"),
    (lambda: nn.ResNet32(num_classes=2 ** 31), "lade.ResNet32"),
    (lambda: nn.ResNet32(num_classes=0), "lade.ResNet32"),
    (lambda: nn.conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                               padding=10 ** 6), "lade.conv2d_forward"),
    (lambda: nn.conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                               stride=(1, 2 ** 70)), "lade.conv2d_forward"),
    (lambda: nn.conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                               padding=2 ** 100), "lade.conv2d_forward"),
    (lambda: nn.conv2d_forward(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                               stride=1.0), "lade.conv2d_forward"),
    (lambda: nn.warmup_multistep_lr(0.1, 3, 5, 0.5, [2 ** 80], 0.1), "lade.warmup_multistep_lr"),
    (lambda: nn.warmup_multistep_lr(0.1, 3, 5, 0.5, [1.5], 0.1), "lade.warmup_multistep_lr"),
    (lambda: nn.warmup_multistep_lr(0.1, 3, 5, 0.5, None, 0.1), "lade.warmup_multistep_lr"),
    (lambda: nn.warmup_multistep_lr(0.1, 3), "lade.warmup_multistep_lr"),  # no recipe defaults in the library
    (lambda: nn.maxpool2d_forward(np.zeros((1, 1, 4, 4), np.float32), kernel_size=2 ** 80), "lade.maxpool2d_forward"),
    (lambda: sampling.InstanceSampler(10 ** 12), "lade.sampling.InstanceSampler"),
    (lambda: sampling.InstanceSampler(3, seed=-1), "lade.sampling.InstanceSampler"),
    (lambda: metrics.confusion_matrix(np.zeros(3, np.int64), np.zeros(3, np.int64), classes=-1),
     "lade.metrics.confusion_matrix"),
    (lambda: metrics.confusion_matrix(np.zeros(3, np.int64), np.zeros(3, np.int64), classes=2 ** 40),
     "lade.metrics.confusion_matrix"),
    (lambda: sampling.dirichlet_priors(-1, 3), "lade.sampling.dirichlet_priors"),
    (lambda: sampling.dirichlet_priors(2, 3, alpha=[1.0, 2.0]), "lade.sampling.dirichlet_priors"),
    (lambda: priors.class_counts(np.zeros(3, np.int64), -2), "lade.priors.class_counts"),
    (lambda: data.load_cifar(12, "test"), "lade.data.load_cifar"),
    (lambda: data.CifarTest(mean=(0.5,)), "lade.data.CifarTest"),
    (lambda: data.CifarTest(std=(0.5, 0.0, 0.5)), "lade.data.CifarTest"),
    (lambda: data.CifarTrain(pad=-1), "lade.data.CifarTrain"),
    (lambda: data.ImageNetEval(resize=2 ** 40), "lade.data.ImageNetEval"),
    (lambda: nn.warmup_multistep_lr(0.1, -1, 5, 0.5, [2], 0.1), "lade.warmup_multistep_lr"),
    (lambda: nn.cosine_lr(0.1, 201, 200), "lade.cosine_lr"),
    (lambda: nn.cosine_lr(0.1, -1, 200), "lade.cosine_lr"),
    (lambda: metrics.nll(np.array([[-0.5, 1.5]], np.float32), np.array([0])), "lade.metrics.nll"),
    (lambda: metrics.reliability_diagram(np.full((2, 2), 0.5, np.float32), np.zeros(2, np.int64), n_bins=2.5),
     "lade.metrics.reliability_diagram"),
    (lambda: priors.prior_from_counts(np.array([1.5, 2.0])), "lade.priors.prior_from_counts"),
    (lambda: priors.prior_from_counts(np.array([np.nan, 2.0])), "lade.priors.prior_from_counts"),
    (lambda: sampling.lt_subset(np.zeros(4, np.int64), np.array([2.5])), "lade.sampling.lt_subset"),
    (lambda: prior_shift.em_prior(np.zeros((4, 3), np.float32), np.full(3, 1 / 3, np.float32)),
     "lade.prior_shift.em_prior"),
    (lambda: nn.batchnorm2d_forward_eval(np.ones((2, 3, 4, 4), np.float32), np.ones(3, np.float32),
                                         np.zeros(3, np.float32), np.zeros(3, np.float32), -np.ones(3, np.float32)),
     "lade.batchnorm2d_forward_eval"),
    (lambda: data.set_jpeg_max_pixels(0), "lade.data.set_jpeg_max_pixels"),
    (lambda: data.set_jpeg_max_pixels(2 ** 40), "lade.data.set_jpeg_max_pixels"),
])
def test_bad_arguments_raise_errors_naming_lades_function(call, func):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    assert str(e.value).startswith(func + ":"), str(e.value)


def test_predict_refuses_bad_batch_sizes():
    net = nn.ResNet32(10)
    x = np.zeros((3, 3, 32, 32), np.float32)
    for bad in (-1, 0, 2.0, True):
        with pytest.raises((ValueError, TypeError), match="lade.predict: argument 'batch_size'"):
            nn.predict(net, x, batch_size=bad)
    np.testing.assert_array_equal(nn.predict(net, x, batch_size=2), net.forward(x, train=False))


def test_sgd_takes_numpy_scalars():
    net = nn.ResNet32(10)
    opt = nn.SGD(net, np.float32(0.1), momentum=np.float64(0.9), weight_decay=np.float32(5e-4))
    assert opt.lr == pytest.approx(0.1) and isinstance(opt.lr, float)
    with pytest.raises(ValueError, match="lade.SGD: argument 'lr'"):
        nn.SGD(net, np.float32("nan"))


def test_load_state_dict_is_all_or_nothing():
    net = nn.ResNet32(10, seed=1)
    before = net.params.copy(), net.buffers.copy()
    state = nn.ResNet32(10, seed=2).state_dict()
    names = list(state)
    for bad_value in (np.full_like(state[names[-3]], np.nan), np.zeros((2, 2), np.float32)):
        broken = dict(state)
        broken[names[-3]] = bad_value  # a late tensor: those before it must not have been copied
        with pytest.raises(ValueError, match="lade.ResNet32.load_state_dict"):
            net.load_state_dict(broken)
        np.testing.assert_array_equal(net.params, before[0])
        np.testing.assert_array_equal(net.buffers, before[1])
    var = next(k for k in names if k.endswith("running_var"))
    broken = dict(state, **{var: -np.ones_like(state[var])})
    with pytest.raises(ValueError, match="negative variance"):
        net.load_state_dict(broken)
    np.testing.assert_array_equal(net.buffers, before[1])
    net.load_state_dict(state)
    assert all(np.array_equal(v, state[k]) for k, v in net.state_dict().items())


def test_assigning_params_copies_into_the_model_or_is_refused_by_name():
    """Issue 28: `net.params = np.zeros(5)` rebound the attribute and the model kept its weights."""
    net, other = nn.ResNet32(10, seed=1), nn.ResNet32(10, seed=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    view = net.params
    net.params = other.params
    net.buffers = other.buffers
    assert net.params is view  # still the zero-copy view the C model computes from
    np.testing.assert_array_equal(net.forward(x, train=False), other.forward(x, train=False))
    before = net.params.copy(), net.buffers.copy()
    with pytest.raises(ValueError, match=r"lade.ResNet32.params: argument 'params' must have shape "
                                         rf"\({net.num_params},\), got \(5,\)"):
        net.params = np.zeros(5)
    with pytest.raises(ValueError, match=r"lade.ResNet32.params: argument 'params' contains NaN"):
        net.params = np.full(net.num_params, np.nan)
    with pytest.raises(TypeError, match=r"lade.ResNet32.grads: argument 'grads' must hold real numbers"):
        net.grads = np.full(net.num_params, "a")
    var = net.buffers.copy()
    var[-1] = -1.0  # the last buffer is a running variance
    with pytest.raises(ValueError, match=r"lade.ResNet32.buffers: argument 'buffers\[.*running_var'\]' has a neg"):
        net.buffers = var
    np.testing.assert_array_equal(net.params, before[0])
    np.testing.assert_array_equal(net.buffers, before[1])


def test_sgd_load_state_dict_is_all_or_nothing():
    net = nn.ResNet32(10)
    opt = nn.SGD(net, 0.1)
    with pytest.raises(ValueError, match="lade.SGD.load_state_dict"):
        opt.load_state_dict({"velocity": np.ones_like(opt.velocity), "steps": -1, "lr": 0.1})
    assert not opt.velocity.any() and opt.steps == 0


def test_schedules_still_give_the_recipe_values():
    from test_models import recipe_schedule
    assert nn.warmup_multistep_lr(0.2, 0, **recipe_schedule()) == pytest.approx(0.2 / 3)
    assert nn.warmup_multistep_lr(0.2, 160, **recipe_schedule()) == pytest.approx(0.2 * 1e-4)
    assert nn.cosine_lr(0.1, 200, 200) == pytest.approx(0.0, abs=1e-12)


def test_list_files_with_a_bom_cr_only_lines_or_latin1_paths(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfa.jpg 1\rb.jpg 2\r")
    lf = data.ListFile(tmp_path / "bom.txt")
    assert [lf[i] for i in range(len(lf))] == [("a.jpg", 1), ("b.jpg", 2)] and lf.line(1) == 2
    (tmp_path / "latin1.txt").write_bytes(b"ok.jpg 0\ncaf\xe9.jpg 1\n")
    with pytest.raises(lade.DecodeError, match=r"latin1.txt line 2: expected a UTF-8 path"):
        data.ListFile(tmp_path / "latin1.txt")
    lf = data.ListFile(str(tmp_path / "bom.txt").encode())  # a bytes path works like a str path
    assert len(lf) == 2


def _jpeg(width, height):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def test_jpeg_pixel_limit_has_a_default_and_can_be_set():
    assert data.jpeg_max_pixels() == 2 ** 26
    blob = _jpeg(64, 48)
    previous = data.set_jpeg_max_pixels(64 * 48 - 1)
    try:
        with pytest.raises(lade.DecodeError, match="64 x 48 pixels is outside the accepted size"):
            data.decode_jpeg(blob)
        data.set_jpeg_max_pixels(64 * 48)
        assert data.decode_jpeg(blob).shape == (48, 64, 3)
    finally:
        data.set_jpeg_max_pixels(previous)
    # a 16384 x 16384 header (1.6 GB of decoded pixels) is refused by the default limit before any decoding
    header = bytearray(_jpeg(16, 16))
    sof = header.find(b"\xff\xc0")
    header[sof + 5:sof + 9] = (16384).to_bytes(2, "big") * 2
    with pytest.raises(lade.DecodeError, match="16384 x 16384"):
        data.decode_jpeg(bytes(header))


def test_skip_bad_never_yields_an_empty_batch_and_skipped_survives_close(tmp_path):
    good = _jpeg(32, 32)
    names = ["bad0.jpg", "bad1.jpg", "good0.jpg", "good1.jpg"]
    for name in names:
        (tmp_path / name).write_bytes(good if name.startswith("good") else b"not a jpeg")
    (tmp_path / "list.txt").write_text("".join(f"{n} 0\n" for n in names))
    loader = data.Loader(data.ListFile(tmp_path / "list.txt"), 2, data.CifarTest(), shuffle=False, skip_bad=True,
                         num_workers=1)
    batches = [y.tolist() for _, y in loader]
    assert batches == [[0, 0]]  # the all-bad first batch is left out, not yielded empty
    loader.close()
    assert loader.skipped == 2 and "bad1.jpg" in loader.last_skip_reason


def test_methods_of_c_objects_go_through_the_one_parser():
    """ResNetCore's and Loader's methods are binding tables (bind.h SELF): the object must be
    initialised, is not a keyword, and the signature comes from the table."""
    image = np.zeros((1, 3, 8, 8), np.float32)
    core = lade._C.ResNetCore.__new__(lade._C.ResNetCore)
    with pytest.raises(RuntimeError, match=r"lade.ResNet32.forward: .* not initialised"):
        core.forward(image)
    net = nn.ResNet32(10)
    with pytest.raises(TypeError, match="lade.ResNet32.forward: unexpected keyword argument 'self'"):
        net._core.forward(image, self=net._core)
    with pytest.raises(TypeError, match="lade.ResNet32.forward: argument 'images' must have dtype float32"):
        net._core.forward(image.astype(np.float64))
    assert net._core.forward.__doc__.startswith("forward(images, train=True, defer_running_stats=False, out=None)")


def test_int_arguments_take_an_int_or_a_sequence_of_ints_of_any_integer_type():
    assert nn.warmup_multistep_lr(0.1, 170, 5, 0.01, np.array([160, 180]), 0.1) == pytest.approx(0.01)
    assert nn.warmup_multistep_lr(0.1, 170, 5, 0.01, 160, 0.1) == pytest.approx(0.01)
    assert nn.warmup_multistep_lr(0.1, 150, 5, 0.01, (160, 180), 0.1) == pytest.approx(0.1)
    x, w = np.zeros((1, 1, 6, 6), np.float32), np.ones((1, 1, 3, 3), np.float32)
    assert nn.conv2d_forward(x, w, stride=(np.int64(2), 1), padding=np.int32(1)).shape == (1, 1, 3, 6)
    with pytest.raises(ValueError, match="argument 'stride' must be an int or a pair of ints, got 3 ints"):
        nn.conv2d_forward(x, w, stride=(1, 1, 1))
    with pytest.raises(ValueError, match=r"argument 'milestones' must be 32-bit ints \(at most 64\)"):
        nn.warmup_multistep_lr(0.1, 3, 5, 0.5, list(range(65)), 0.1)


def test_fast_bbse_with_a_class_missing_from_the_held_out_set_falls_back_by_name():
    """evaluate_logits' fast protocol with BBSE: a held-out set without class 4 cannot be inverted, so BBSE
    falls back to no adjustment (it raised NameError: name 'form' is not defined)."""
    from lade.app import evaluation
    rng = np.random.default_rng(0)
    classes = 5
    y = np.repeat(np.arange(classes), 60)
    f = (rng.normal(size=(y.size, classes)) + 3 * np.eye(classes)[y]).astype(np.float32)
    cy = np.repeat(np.arange(classes - 1), 20)
    cf = (rng.normal(size=(cy.size, classes)) + 3 * np.eye(classes)[cy]).astype(np.float32)
    r = evaluation.evaluate_logits(f, y, np.array([100, 50, 20, 10, 5]), cf, cy, estimated_prior="fast", fast_bbse=True)
    assert any("BBSE fell back to no adjustment" in n for n in r["notes"])
    assert all(v is not None for v in r["shift"]["accuracy"]["bbse"])


@pytest.mark.parametrize("call, func", [
    (lambda p: lade.posthoc.pc_adjust(np.zeros((2, 4), np.float32), p), "lade.posthoc.pc_adjust"),
    (lambda p: lade.posthoc.lade_adjust(np.zeros((2, 4), np.float32), p), "lade.posthoc.lade_adjust"),
    (lambda p: lade.posthoc.logit_adjust(np.zeros((2, 4), np.float32), p), "lade.posthoc.logit_adjust"),
    (lambda p: prior_shift.adapt(np.zeros((2, 4), np.float32), p, family="free"), "lade.prior_shift.adapt"),
    (lambda p: prior_shift.em_prior(np.full((2, 4), 0.25, np.float32), p), "lade.prior_shift.em_prior"),
    (lambda p: lade.losses.LADELoss(p, 0.1, 0.01), "lade.losses.LADELoss"),
    (lambda p: lade.losses.lade_ce(np.zeros((2, 4), np.float32), np.zeros(2, np.int64), p), "lade.losses.lade_ce"),
    (lambda p: sampling.shifted_test_subset(np.arange(4), p, 10, "forward"), "lade.sampling.shifted_test_subset"),
    (lambda p: sampling.prior_test_subset(np.arange(4), p), "lade.sampling.prior_test_subset"),
    (lambda p: lade.decoupled.lade_retrain(np.zeros((4, 3), np.float32), np.arange(4), p, 4),
     "lade.decoupled.lade_retrain"),
])
@pytest.mark.parametrize("prior", ["abcd", [0.5, 0.6, 0.1, 0.1]])
def test_a_bad_prior_names_the_function_called(call, func, prior):
    with pytest.raises((TypeError, ValueError), match=f"^{func}: argument '\\w+'"):
        call(prior)
