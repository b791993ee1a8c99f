"""Target-prior estimation: EM and BBSE recover a known prior from synthetic posteriors.

Synthetic task: 5 classes, 2-D unit Gaussians with means on a circle of radius 2, so the exact
source posterior logits are log p(x|y) + log p_s(y). Tolerance: max |p_hat - p_t| <= 0.02 (EM)
and <= 0.03 (BBSE) with 20000 test and 20000 calibration samples.
"""
import numpy as np
import pytest

from lade import posthoc, prior_shift

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
    res = prior_shift.adapt(TEST_LOGITS, PS, method="em", calibration="none")
    assert np.abs(res.prior - PT).max() <= 0.02
    assert res.converged and res.iterations > 1
    np.testing.assert_allclose(res.probs.sum(1), 1, atol=1e-5)
    # the adapted posteriors are the source posteriors moved to the estimated prior
    expected = posthoc.softmax(TEST_LOGITS - np.log(PS) + np.log(res.prior))
    np.testing.assert_allclose(res.probs, expected, atol=1e-5)
    assert res.shift_test["p_value"] < 1e-10


def test_em_with_bcts_undoes_miscalibration():
    distort = lambda z: np.ascontiguousarray(2.5 * z + np.array([1, 0, -1, 0.5, 0]), dtype=np.float32)  # noqa: E731
    raw = prior_shift.adapt(distort(TEST_LOGITS), PS, method="em", calibration="none")
    fixed = prior_shift.adapt(distort(TEST_LOGITS), PS, calib_logits=distort(CAL_LOGITS), calib_labels=CAL_Y)
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
    em = prior_shift.adapt(same_logits, PS, method="em", calibration="none")
    bb = prior_shift.adapt(same_logits, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y, method="bbse")
    assert em.shift_test["p_value"] > 0.01 and em.shift_test["dof"] == C - 1
    assert bb.shift_test["p_value"] > 0.01
    assert np.abs(em.prior - PS).max() < 0.03


def test_bootstrap_interval():
    for method in ("em", "bbse"):
        res = prior_shift.adapt(TEST_LOGITS[:4000], PS, calib_logits=CAL_LOGITS[:4000], calib_labels=CAL_Y[:4000],
                                method=method, bootstrap=60, seed=3)
        lo, hi = res.interval
        assert res.replicates.shape == (60, C) and res.level == 0.95
        assert (lo <= res.prior + 1e-6).all() and (res.prior <= hi + 1e-6).all(), method
        assert ((PT >= lo - 0.01) & (PT <= hi + 0.01)).all(), method
        assert (hi - lo).max() < 0.1
        again = prior_shift.adapt(TEST_LOGITS[:4000], PS, calib_logits=CAL_LOGITS[:4000],
                                  calib_labels=CAL_Y[:4000], method=method, bootstrap=60, seed=3)
        np.testing.assert_array_equal(again.replicates, res.replicates)


def test_bbse_ill_conditioned_warns_and_falls_back():
    cal_logits, cal_y = CAL_LOGITS.copy(), CAL_Y.copy()
    # classes 0 and 1 share one input: their confusion columns are proportional (singular)
    cal_logits[cal_y <= 1] = cal_logits[np.flatnonzero(cal_y == 0)[0]]
    with pytest.warns(RuntimeWarning, match="ill-conditioned.*falling back to no shift"):
        res = prior_shift.adapt(TEST_LOGITS, PS, calib_logits=cal_logits, calib_labels=cal_y, method="bbse",
                                calibration="none")
    assert res.fell_back and not np.isfinite(res.condition_number)
    np.testing.assert_allclose(res.prior, PS, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="argument 'source_prior' must sum to 1"):
        prior_shift.adapt(TEST_LOGITS, PS * 0.5)
    with pytest.raises(ValueError, match="argument 'calib_logits' is required"):
        prior_shift.adapt(TEST_LOGITS, PS, method="bbse")
    with pytest.raises(ValueError, match="argument 'calib_labels' must have shape"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=CAL_Y[:-1])
    with pytest.raises(ValueError, match="argument 'test_logits' must have shape"):
        prior_shift.adapt(TEST_LOGITS[:, :4], PS)
    bad = TEST_LOGITS.copy()
    bad[5, 2] = np.nan
    with pytest.raises(FloatingPointError,
                       match=r"adapt: argument 'test_logits' has a non-finite value nan at \[5, 2\]"):
        prior_shift.adapt(bad, PS)
    y = CAL_Y.copy()
    y[y == 3] = 2
    with pytest.raises(ValueError, match="argument 'calib_labels' must contain every class"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=y)
    y[0] = 9
    with pytest.raises(ValueError, match=r"labels\[0\] = 9"):
        prior_shift.adapt(TEST_LOGITS, PS, calib_logits=CAL_LOGITS, calib_labels=y, method="bbse", calibration="none")
    with pytest.raises(ValueError, match="argument 'method'"):
        prior_shift.adapt(TEST_LOGITS, PS, method="mle")
