"""Post-hoc adjustment, softmax, tau-normalisation and temperature fitting."""
import numpy as np
import pytest
import torch

from lade import posthoc

rng = np.random.default_rng(0)
Z = (rng.normal(size=(50, 6)) * 4).astype(np.float32)
PS = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], np.float32)
PT = PS[::-1].copy()


def test_adjustments_match_formulas():
    np.testing.assert_allclose(posthoc.pc_adjust(Z, PS, PT), Z - np.log(PS) + np.log(PT), atol=1e-5)
    np.testing.assert_allclose(posthoc.pc_adjust(Z, PS), Z - np.log(PS), atol=1e-5)
    np.testing.assert_allclose(posthoc.lade_adjust(Z, PT), Z + np.log(PT), atol=1e-5)
    np.testing.assert_array_equal(posthoc.lade_adjust(Z), Z)
    np.testing.assert_allclose(posthoc.logit_adjust(Z, PS, tau=0.7), Z - 0.7 * np.log(PS), atol=1e-5)
    out = Z.copy()
    assert posthoc.pc_adjust(out, PS, PT, out=out) is out  # in place
    np.testing.assert_allclose(out, Z - np.log(PS) + np.log(PT), atol=1e-5)


def test_softmax_matches_torch():
    bias = rng.normal(size=6)
    ref = torch.softmax(torch.tensor(Z, dtype=torch.float64) / 1.7 + torch.tensor(bias), 1).numpy()
    np.testing.assert_allclose(posthoc.softmax(Z, 1.7, bias), ref, atol=1e-6)
    big = np.array([[80, -80, 0], [-80, -80, -80]], np.float32)
    np.testing.assert_allclose(posthoc.softmax(big), torch.softmax(torch.tensor(big, dtype=torch.float64), 1).numpy(),
                               atol=1e-7)
    np.testing.assert_allclose(posthoc.pc_softmax(Z, PS, PT),
                               torch.softmax(torch.tensor(Z - np.log(PS) + np.log(PT), dtype=torch.float64), 1).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(posthoc.lade_softmax(Z, PT), posthoc.softmax(Z + np.log(PT)), atol=1e-6)


def test_tau_normalize():
    w = rng.normal(size=(5, 8)).astype(np.float32)
    w[3] = 0
    for tau in (0.0, 0.5, 1.0):
        norms = np.linalg.norm(w.astype(np.float64), axis=1, keepdims=True)
        expected = np.where(norms > 0, w / np.where(norms > 0, norms, 1) ** tau, 0)
        np.testing.assert_allclose(posthoc.tau_normalize(w, tau), expected, atol=1e-6)


def sample_labels(true_logits, seed=1):
    r = np.random.default_rng(seed)
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    u = r.random(len(p))[:, None]
    return (u > np.cumsum(p, 1)).sum(1).astype(np.int64)


def test_fit_temperature_recovers_scale():
    r = np.random.default_rng(2)
    true = r.normal(size=(20000, 5)) * 2
    y = sample_labels(true)
    ts = posthoc.fit_temperature((3.0 * true).astype(np.float32), y)
    assert ts.temperature == pytest.approx(3.0, rel=0.05) and ts.bias is None
    # the fitted NLL is no worse than at the true temperature
    p = ts((3.0 * true).astype(np.float32))
    assert ts.nll <= -np.mean(np.log(torch.softmax(torch.tensor(true), 1).numpy()[np.arange(len(y)), y])) + 1e-6
    assert p.shape == (20000, 5)


def test_bias_corrected_temperature_recovers_bias():
    r = np.random.default_rng(3)
    true = r.normal(size=(30000, 4)) * 2
    y = sample_labels(true)
    shift = np.array([1.0, -0.5, 0.0, -0.5])
    z = (2.0 * (true - shift)).astype(np.float32)  # softmax(z / 2 + shift) is the true posterior
    bc = posthoc.fit_temperature(z, y, bias=True)
    assert bc.temperature == pytest.approx(2.0, rel=0.05)
    np.testing.assert_allclose(bc.bias, shift - shift.mean(), atol=0.06)
    assert abs(bc.bias.sum()) < 1e-9
    # stationarity: the gradient of the mean NLL in (1/T, bias) vanishes at the fit
    zt = torch.tensor(z, dtype=torch.float64)
    beta = torch.tensor(1 / bc.temperature, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bc.bias, requires_grad=True)
    torch.nn.functional.cross_entropy(zt * beta + b, torch.tensor(y)).backward()
    assert abs(beta.grad.item()) < 1e-6 and np.abs(b.grad.numpy()).max() < 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="lade.posthoc.pc_adjust: argument 'target_prior'"):
        posthoc.pc_adjust(Z, PS, np.r_[PT[:-1] + PT[-1], 0].astype(np.float32))
    with pytest.raises(ValueError, match="argument 'source_prior' must sum to 1"):
        posthoc.pc_adjust(Z, PS * 2)
    bad = Z.copy()
    bad[1, 1] = np.inf
    with pytest.raises(FloatingPointError, match=r"argument 'logits' has a non-finite value inf at \[1, 1\]"):
        posthoc.softmax(bad)
    with pytest.raises(ValueError, match="argument 'temperature'"):
        posthoc.softmax(Z, 0.0)
    with pytest.raises(ValueError, match=r"argument 'labels' must have shape \(50,\)"):
        posthoc.fit_temperature(Z, np.zeros(49, np.int64))
