"""Post-hoc adjustment of logits from any model (C core: csrc/posthoc.c), spec §2.1.

    pc_adjust(f, p_s, p_t)      PC Softmax: f - log p_s + log p_t (p_t None = uniform)
    lade_adjust(f, p_t)         LADE / Balanced Softmax test-time form: f + log p_t
    logit_adjust(f, p_s, tau)   Menon et al. post-hoc: f - tau log p_s (+ log p_t)
    softmax(f, temperature, bias)
    tau_normalize(W, tau)       classifier weights W[c] / ||W[c]||^tau (Kang et al. 2020)
    fit_temperature(f, y, bias=False)   temperature scaling (or bias-corrected TS) on held-out logits

Inputs are float32 (n, C) C-contiguous arrays; `out` may be given (it may be the input).
"""
import numpy as np

from lade import _C, _args
from lade.priors import as_prior

__all__ = ["pc_adjust", "lade_adjust", "logit_adjust", "pc_softmax", "lade_softmax", "softmax", "tau_normalize",
           "fit_temperature", "TemperatureScaling"]


def _out(logits, out):
    if out is None and isinstance(logits, np.ndarray) and logits.ndim == 2:
        return np.empty(logits.shape, np.float32)
    return out


def _adjust(func, logits, source_prior, tau, target_prior, out):
    sp = None if source_prior is None else as_prior(source_prior, func, "source_prior")
    tp = None if target_prior is None else as_prior(target_prior, func, "target_prior")
    out = _out(logits, out)
    _C.lt_adjust_logits(func, logits, out, sp, _args.real(tau, func, "tau"), tp)
    return out


def pc_adjust(logits, source_prior, target_prior=None, out=None):
    """PC Softmax logits f - log p_s + log p_t (uniform target when target_prior is None)."""
    return _adjust("lade.posthoc.pc_adjust", logits, source_prior, 1.0, target_prior, out)


def lade_adjust(logits, target_prior=None, out=None):
    """LADE / Balanced Softmax test-time logits f + log p_t (unchanged for a uniform target)."""
    return _adjust("lade.posthoc.lade_adjust", logits, None, 0.0, target_prior, out)


def logit_adjust(logits, source_prior, tau=1.0, target_prior=None, out=None):
    """Post-hoc logit adjustment f - tau * log p_s (+ log p_t when given)."""
    return _adjust("lade.posthoc.logit_adjust", logits, source_prior, tau, target_prior, out)


def softmax(logits, temperature=1.0, bias=None, out=None):
    """Row-wise softmax(logits / temperature + bias) as float32."""
    func = "lade.posthoc.softmax"
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
    out = _out(logits, out)
    _C.lt_softmax(func, logits, out, _args.real(temperature, func, "temperature"), b)
    return out


def pc_softmax(logits, source_prior, target_prior=None):
    """PC Softmax probabilities softmax(f - log p_s + log p_t)."""
    adjusted = pc_adjust(logits, source_prior, target_prior)
    return softmax(adjusted, out=adjusted)


def lade_softmax(logits, target_prior=None):
    """LADE / Balanced Softmax probabilities softmax(f + log p_t)."""
    adjusted = lade_adjust(logits, target_prior)
    return softmax(adjusted, out=adjusted)


def tau_normalize(weights, tau=1.0, out=None):
    """tau-normalised classifier weights: row c divided by ||row c||_2 ** tau (zero rows kept)."""
    out = _out(weights, out)
    _C.lt_tau_normalize("lade.posthoc.tau_normalize", weights, out,
                        _args.real(tau, "lade.posthoc.tau_normalize", "tau"))
    return out


class TemperatureScaling:
    """A fitted calibration map logits -> softmax(logits / temperature + bias)."""

    def __init__(self, temperature, bias, nll):
        self.temperature, self.bias, self.nll = temperature, bias, nll

    def __call__(self, logits, out=None):
        """Calibrated probabilities."""
        return softmax(logits, self.temperature, self.bias, out)

    def __repr__(self):
        b = "" if self.bias is None else f", bias=<{self.bias.shape[0]} classes>"
        return f"TemperatureScaling(temperature={self.temperature:.4g}{b}, nll={self.nll:.4g})"


def fit_temperature(logits, labels, bias=False, max_iter=100):
    """Fits temperature scaling (bias=False) or bias-corrected temperature scaling (bias=True,
    Alexandari et al. 2020) on held-out labelled logits by minimising the NLL (Newton's
    method, convex in (1/T, bias)). Returns a TemperatureScaling."""
    func = "lade.posthoc.fit_temperature"
    max_iter = _args.whole(max_iter, func, "max_iter", 1)
    b = None
    if bias:
        if not (isinstance(logits, np.ndarray) and logits.ndim == 2):
            _C.lt_fit_temperature(func, logits, labels, None, max_iter)  # raises the argument error
        b = np.empty(logits.shape[1], np.float64)
    t, nll = _C.lt_fit_temperature(func, logits, labels, b, max_iter)
    return TemperatureScaling(t, b, nll)
