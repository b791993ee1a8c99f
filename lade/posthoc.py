"""Post-hoc adjustment of logits from any model (C core: csrc/ltmath/posthoc.c), spec §2.1.

    pc_adjust(f, p_s, p_t)      PC Softmax: f - log p_s + log p_t (p_t None = uniform)
    lade_adjust(f, p_t)         LADE / Balanced Softmax test-time form: f + log p_t
    logit_adjust(f, p_s, tau)   Menon et al. post-hoc: f - tau log p_s (+ log p_t)
    softmax(f, temperature, bias)
    tau_normalize(W, tau)       classifier weights W[c] / ||W[c]||^tau (Kang et al. 2020)
    fit_temperature(f, y, bias=False)   temperature scaling (or bias-corrected TS) on held-out logits

Multi-label (independent sigmoid outputs, one per label; marginals m[j] = P(y_j = 1), each in (0, 1)):
    pc_adjust_multilabel(f, m_s, m_t)   per-label PC: f - logit(m_s) + logit(m_t) (m_t None = balanced, 0.5)
    pc_sigmoid(f, m_s, m_t)             sigmoid of that: the corrected per-label probabilities
    sigmoid(f)                          element-wise 1 / (1 + exp(-f)), without overflow for any |f|

Inputs are float32 (n, C) C-contiguous arrays; `out` may be given (it may be the input).
"""
import numpy as np

from lade import _C
from lade.priors import as_float32

__all__ = ["pc_adjust", "lade_adjust", "logit_adjust", "pc_softmax", "lade_softmax", "softmax", "tau_normalize",
           "fit_temperature", "TemperatureScaling", "pc_adjust_multilabel", "pc_sigmoid", "sigmoid"]


def _prior(prior, arg, func):
    return None if prior is None else as_float32(prior, arg, func)


def pc_adjust(logits, source_prior, target_prior=None, out=None):
    """PC Softmax logits f - log p_s + log p_t (uniform target when target_prior is None)."""
    func = "lade.posthoc.pc_adjust"
    return _C.pc_adjust(logits, _prior(source_prior, "source_prior", func), 1.0,
                        _prior(target_prior, "target_prior", func), out)


def lade_adjust(logits, target_prior=None, out=None):
    """LADE / Balanced Softmax test-time logits f + log p_t (unchanged for a uniform target)."""
    return _C.lade_adjust(logits, None, 0.0, _prior(target_prior, "target_prior", "lade.posthoc.lade_adjust"), out)


def logit_adjust(logits, source_prior, tau=1.0, target_prior=None, out=None):
    """Post-hoc logit adjustment f - tau * log p_s (+ log p_t when given)."""
    func = "lade.posthoc.logit_adjust"
    return _C.logit_adjust(logits, _prior(source_prior, "source_prior", func), tau,
                           _prior(target_prior, "target_prior", func), out)


def softmax(logits, temperature=1.0, bias=None, out=None):
    """Row-wise softmax(logits / temperature + bias) as float32."""
    b = None if bias is None else np.ascontiguousarray(bias, dtype=np.float64)
    return _C.softmax(logits, temperature, b, out)


def pc_softmax(logits, source_prior, target_prior=None):
    """PC Softmax probabilities softmax(f - log p_s + log p_t)."""
    adjusted = pc_adjust(logits, source_prior, target_prior)
    return softmax(adjusted, out=adjusted)


def lade_softmax(logits, target_prior=None):
    """LADE / Balanced Softmax probabilities softmax(f + log p_t)."""
    adjusted = lade_adjust(logits, target_prior)
    return softmax(adjusted, out=adjusted)


def pc_adjust_multilabel(logits, source_marginals, target_marginals=None, out=None):
    """Multi-label PC: per-label log-odds f - logit(m_s) + logit(m_t), logit(p) = log p - log(1 - p), for
    sigmoid outputs whose training marginals are source_marginals (C,), each in (0, 1). target_marginals None
    means balanced labels (0.5: only -logit(m_s) is applied)."""
    func = "lade.posthoc.pc_adjust_multilabel"
    return _C.pc_adjust_multilabel(logits, as_float32(source_marginals, "source_marginals", func),
                                   _prior(target_marginals, "target_marginals", func), False, out)


def pc_sigmoid(logits, source_marginals, target_marginals=None, out=None):
    """Multi-label PC probabilities sigmoid(f - logit(m_s) + logit(m_t)) (see pc_adjust_multilabel)."""
    func = "lade.posthoc.pc_sigmoid"
    return _C.pc_sigmoid(logits, as_float32(source_marginals, "source_marginals", func),
                         _prior(target_marginals, "target_marginals", func), True, out)


def sigmoid(logits, out=None):
    """Element-wise sigmoid 1 / (1 + exp(-f)) as float32, computed without overflow for any finite f."""
    return _C.sigmoid(logits, None, None, True, out)


def tau_normalize(weights, tau=1.0, out=None):
    """tau-normalised classifier weights: row c divided by ||row c||_2 ** tau (zero rows kept)."""
    return _C.tau_normalize(weights, tau, out)


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
    t, b, nll = _C.fit_temperature(logits, labels, bias, max_iter)
    return TemperatureScaling(t, b, nll)
