"""Property-based tests of the public API (Hypothesis): random shapes, dtypes, strides, NaN/Inf
and extreme values. Every call either returns the correct result (checked against NumPy in
float64) or raises an error whose message starts with lade's function name. Derandomized and
bounded so that each test takes a few seconds and fails the same way on every run."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lade
from lade import losses, metrics, nn, posthoc, priors

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LADE_ERRORS = (ValueError, TypeError, FloatingPointError, lade.DecodeError)

DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_])
EXTREMES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38, -3.4e38, 1e30, np.nan, np.inf, -np.inf])


@st.composite
def arrays(draw, ndim=None, max_side=6, dtype=None):
    """An array of random dtype and shape, maybe a non-contiguous view, with extreme values mixed in."""
    dims = draw(st.integers(0, 4)) if ndim is None else ndim
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=dims, max_size=dims)))
    dt = np.dtype(draw(DTYPES) if dtype is None else dtype)
    if dt.kind == "f":
        elements = (st.one_of(st.floats(-50, 50, width=32), EXTREMES) if dt.itemsize >= 4
                    else st.floats(-50, 50, width=16))
    elif dt.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dt)
        elements = st.integers(max(info.min, -5), min(info.max, 20))
    a = draw(hnp.arrays(dt, shape, elements=elements))
    layout = draw(st.sampled_from(["c", "fortran", "strided", "readonly"]))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "readonly":
        a.flags.writeable = False
    return a


def _named(err, func):
    assert str(err).startswith(func), f"{type(err).__name__} does not name {func}: {err}"


def _valid_scores(x):
    return (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 2 and x.flags.c_contiguous
            and x.shape[0] >= 1 and x.shape[1] >= 1 and np.isfinite(x).all())


def _valid_labels(y, n, classes):
    return (isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (n,) and y.flags.c_contiguous
            and ((y >= 0) & (y < classes)).all())


@SETTINGS
@given(arrays(), arrays(ndim=1, dtype=np.int64))
def test_accuracy_is_right_or_names_itself(scores, labels):
    try:
        acc = metrics.accuracy(scores, labels)
    except LADE_ERRORS as e:
        _named(e, "lade.metrics")
        assert not (_valid_scores(scores) and _valid_labels(labels, scores.shape[0], scores.shape[1]))
        return
    assert _valid_scores(scores) and _valid_labels(labels, scores.shape[0], scores.shape[1])
    expected = np.mean(np.argmax(scores, axis=1) == labels)
    assert acc == pytest.approx(expected)


@SETTINGS
@given(arrays(), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 0.5, 2.0])))
def test_softmax_is_right_or_names_itself(logits, temperature):
    try:
        p = posthoc.softmax(logits, temperature=temperature)
    except LADE_ERRORS as e:
        _named(e, "lade.posthoc.softmax")
        return
    assert _valid_scores(logits) and math.isfinite(temperature) and temperature > 0
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-4, atol=1e-6)


@SETTINGS
@given(arrays(), arrays(ndim=1, dtype=np.int64))
def test_softmax_ce_is_right_or_names_itself(logits, labels):
    try:
        value, grad = losses.softmax_ce(logits, labels)
    except LADE_ERRORS as e:
        _named(e, "lade.")
        return
    assert _valid_scores(logits) and _valid_labels(labels, logits.shape[0], logits.shape[1])
    z = logits.astype(np.float64)
    lse = np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1)) + z.max(axis=1)
    expected = np.mean(lse - z[np.arange(len(labels)), labels])
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert grad.shape == logits.shape and np.isfinite(grad).all()


@SETTINGS
@given(arrays(), arrays(ndim=1, dtype=np.int64))
def test_nll_and_brier_are_right_or_name_themselves(probs, labels):
    try:
        nll = metrics.nll(probs, labels)
        brier = metrics.brier(probs, labels)
    except LADE_ERRORS as e:
        _named(e, "lade.metrics.")
        return
    assert _valid_scores(probs) and ((probs >= 0) & (probs <= 1)).all()
    assert _valid_labels(labels, probs.shape[0], probs.shape[1])
    p = probs.astype(np.float64)
    py = p[np.arange(len(labels)), labels]
    assert nll == pytest.approx(np.mean(-np.log(np.clip(py, 1e-15, 1))), rel=1e-6)
    onehot = np.eye(p.shape[1])[labels]
    assert brier == pytest.approx(np.mean(((p - onehot) ** 2).sum(axis=1)), rel=1e-5, abs=1e-9)


@SETTINGS
@given(st.one_of(arrays(ndim=1), st.lists(st.one_of(st.integers(-3, 10 ** 20), st.floats()), max_size=6)),
       st.one_of(st.floats(), st.integers(-2, 2)))
def test_prior_from_counts_is_right_or_names_itself(counts, eps):
    try:
        prior = priors.prior_from_counts(counts, eps=eps)
    except LADE_ERRORS as e:
        _named(e, "lade.priors.prior_from_counts")
        return
    c = np.asarray(counts)
    assert c.dtype.kind in "iuf" and (c == np.round(c)).all() and (c >= 0).all()
    floored = np.maximum(c.astype(np.float64), float(eps))
    np.testing.assert_allclose(prior, floored / floored.sum(), rtol=1e-5)


@SETTINGS
@given(arrays(ndim=4, max_side=5))
def test_relu_is_right_or_names_itself(x):
    try:
        y = nn.relu_forward(x)
    except LADE_ERRORS as e:
        _named(e, "lade.relu_forward")
        return
    assert x.dtype == np.float32
    np.testing.assert_array_equal(y, np.where(x > 0, x, np.where(np.isnan(x), x, 0)).astype(np.float32))


@SETTINGS
@given(arrays(ndim=2, max_side=5), arrays(ndim=2, max_side=5), st.one_of(st.none(), arrays(ndim=1, max_side=5)))
def test_linear_is_right_or_names_itself(x, w, b):
    try:
        y = nn.linear_forward(x, w, b)
    except LADE_ERRORS as e:
        _named(e, "lade.linear_forward")
        return
    assert x.dtype == w.dtype == np.float32 and x.shape[1] == w.shape[1]
    expected = x.astype(np.float64) @ w.astype(np.float64).T + (0 if b is None else b.astype(np.float64))
    finite = np.isfinite(expected) & (np.abs(expected) < 1e30)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-4, atol=1e-3)


@SETTINGS
@given(arrays(ndim=4, max_side=7, dtype=np.float32), st.integers(-1, 4), st.one_of(st.none(), st.integers(-1, 3)),
       st.integers(-1, 3))
def test_maxpool_is_right_or_names_itself(x, kernel, stride, padding):
    try:
        y, argmax = nn.maxpool2d_forward(x, kernel, stride=stride, padding=padding)
    except LADE_ERRORS as e:
        _named(e, "lade.maxpool2d_forward")
        return
    s = kernel if stride is None else stride
    n, c, h, w = x.shape
    assert kernel >= 1 and s >= 1 and 0 <= 2 * padding <= kernel and h >= 1 and w >= 1
    oh, ow = (h + 2 * padding - kernel) // s + 1, (w + 2 * padding - kernel) // s + 1
    assert y.shape == (n, c, oh, ow)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                    constant_values=-np.inf)
    for i in range(oh):
        for j in range(ow):
            window = padded[:, :, i * s:i * s + kernel, j * s:j * s + kernel].reshape(n, c, kernel * kernel)
            expected = np.where(np.isnan(window).any(axis=2), np.nan, window.max(axis=2, initial=-np.inf))
            np.testing.assert_array_equal(y[:, :, i, j], expected.astype(np.float32))


@SETTINGS
@given(arrays(ndim=1, dtype=np.int64), arrays(ndim=1, dtype=np.int64), st.integers(-2, 8))
def test_confusion_matrix_is_right_or_names_itself(predicted, labels, classes):
    try:
        m = metrics.confusion_matrix(predicted, labels, classes)
    except LADE_ERRORS as e:
        _named(e, "lade.metrics.confusion_matrix")
        return
    expected = np.zeros((classes, classes), np.int64)
    np.add.at(expected, (labels, predicted), 1)
    np.testing.assert_array_equal(m, expected)


@SETTINGS
@given(st.one_of(st.integers(-2, 10 ** 7), st.floats(allow_nan=True), st.just(True)),
       st.sampled_from(["warmup", "cosine"]))
def test_schedules_are_right_or_name_themselves(epoch, kind):
    try:
        lr = (nn.warmup_multistep_lr(0.2, epoch, warmup_epochs=5, warmup_start=1 / 3, milestones=[120, 160],
                                     factor=0.01) if kind == "warmup" else nn.cosine_lr(0.2, epoch, 200))
    except LADE_ERRORS as e:  # never a bare OverflowError
        _named(e, "lade.")
        return
    assert isinstance(epoch, int) and epoch >= 0 and 0 <= lr <= 0.2
    if kind == "cosine":
        assert epoch <= 200 and lr == pytest.approx(0.1 * (1 + math.cos(math.pi * epoch / 200)))


# ------------------------------------------------- evaluate --logits and the prior-shift estimators
# Issue 28: random shapes, dtypes, NaN/Inf and classes missing from a split give a valid result or an
# error naming lade's function, never a crash or another exception (NameError, IndexError, ...).
FEW = settings(SETTINGS, max_examples=60)


@st.composite
def logits_case(draw):
    """Test and held-out logits (mostly valid, sometimes of another dtype or with NaN/Inf), labels that
    may miss classes or fall outside [0, C), and training counts that may hold 0 or negatives."""
    c = draw(st.integers(1, 5))
    valid = draw(st.booleans())
    n, m = draw(st.integers(10 if valid else 0, 40)), draw(st.integers(0, 20))
    f = draw(arrays(ndim=2, max_side=6)) if not valid else draw(hnp.arrays(
        np.float32, (n, c), elements=st.floats(-8, 8, width=32)))
    classes = f.shape[1] if f.ndim == 2 and f.shape[1] else c
    labels = draw(hnp.arrays(np.int64, (f.shape[0] if f.ndim else 0,), elements=st.integers(-1 if not valid else 0,
                                                                                            classes - 1)))
    counts = draw(hnp.arrays(np.int64, (classes,), elements=st.integers(1 if valid else -2, 50)))
    if draw(st.booleans()):
        counts[-1] = 0  # a class without training images: refused unless zero_count_floor
    calib, kind = None, draw(st.sampled_from(["clean", "none", "clean", "non-finite"]))
    if kind != "none":
        present = draw(st.integers(1, classes))  # the held-out labels may lack the last classes
        values = st.floats(-8, 8, width=32) if kind == "clean" else st.sampled_from([0.0, np.nan, np.inf])
        calib = (draw(hnp.arrays(np.float32, (m, classes), elements=values)),
                 draw(hnp.arrays(np.int64, (m,), elements=st.integers(0, present - 1))))
    return f, labels, counts, calib


@FEW
@given(logits_case(), st.sampled_from(["softmax", "balanced", "lade"]), st.sampled_from(["full", "fast", "none"]),
       st.booleans(), st.sampled_from([None, 0.5]))
def test_evaluate_logits_gives_a_report_or_names_itself(case, method, protocol, fast_bbse, floor):
    from lade.app import evaluation
    from lade.app.runs import RunError
    f, labels, counts, calib = case
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = evaluation.evaluate_logits(f, labels, counts, *(calib or (None, None)), method=method,
                                       estimated_prior=protocol, zero_count_floor=floor, fast_bbse=fast_bbse)
    except (RunError, *LADE_ERRORS) as e:
        _named(e, "lade.evaluate")
        return
    uniform = r["methods"][0]["uniform"]
    assert 0 <= uniform["top1"] <= 1 and r["setup"]["test_images"] == f.shape[0] >= 1
    assert r["setup"]["train_images"] == int(np.sum(counts)) >= 0


@st.composite
def prior_shift_case(draw):
    """adapt's inputs: test logits of any dtype and shape, or valid ones; a source prior that may not be
    one; held-out logits and labels that may lack classes."""
    f, labels, counts, calib = draw(logits_case())
    prior = counts / counts.sum() if counts.sum() > 0 else counts.astype(np.float64)
    if draw(st.booleans()):
        prior = draw(arrays(ndim=1, max_side=6))
    return f, prior, calib


@FEW
@given(prior_shift_case(), st.sampled_from(["em", "bbse"]), st.sampled_from(["bcts", "ts", "none"]),
       st.sampled_from(["free", "tilt", "auto"]), st.sampled_from([None, "no_shift", "uniform"]), st.integers(0, 3),
       st.sampled_from([None, 0.05]))
def test_adapt_gives_a_prior_or_names_itself(case, method, calibration, family, shrink_to, bootstrap, gate):
    import warnings
    from lade import prior_shift
    f, prior, calib = case
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = prior_shift.adapt(f, prior, *(calib or (None, None)), method=method, calibration=calibration,
                                    family=family, shrink_to=shrink_to, bootstrap=bootstrap, gate=gate)
    except LADE_ERRORS as e:
        _named(e, "lade.")
        return
    classes = f.shape[1]
    for p in (res.prior, res.pool_prior):
        assert p.shape == (classes,) and np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1) < 1e-4
    assert res.probs.shape == f.shape and np.isfinite(res.probs).all()
    np.testing.assert_allclose(res.probs.sum(axis=1), 1, atol=1e-4)
    assert 0 <= res.shift_test["p_value"] <= 1


@FEW
@given(arrays(ndim=2, max_side=5), arrays(ndim=1, max_side=5), arrays(ndim=1, max_side=5, dtype=np.int64),
       st.sampled_from(["em", "tilt", "bbse", "mean"]))
def test_prior_estimators_give_a_prior_or_name_themselves(probs, prior, labels, which):
    import warnings
    from lade import prior_shift
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if which == "em":
                p = prior_shift.em_prior(probs, prior, pseudo_count=1.0)[0]
            elif which == "tilt":
                p = prior_shift.tilted_prior(probs, prior, prior)[0]
            elif which == "bbse":
                p = prior_shift.bbse_prior(probs, labels, probs, prior)[0]
            else:
                p = prior_shift.mean_posterior(probs)
    except LADE_ERRORS as e:
        _named(e, "lade.prior_shift")
        return
    assert p.shape == (probs.shape[1],) and np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1) < 1e-4
