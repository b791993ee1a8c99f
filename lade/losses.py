"""Long-tail losses (C core: csrc/ltmath/losses.c).

Every loss is called as ``loss(logits, labels, grad=None) -> (value, grad)``: logits
float32 (n, C) C-contiguous, labels int64 (n,); ``grad`` float32 (n, C) is overwritten
with d value / d logits (allocated when None). Configuration goes to the constructor, with no
recipe defaults: the values of the paper's recipes live in lade/app/configs.

Names (the official code's names confused its users, so each says what it is):
  softmax_ce       plain softmax cross-entropy (spec §1.2)
  lade_ce          LADE-CE = PriorCE = Balanced Softmax: CE on logits + log(prior + 1e-9) (§1.3)
                   (alias 'balanced_softmax')
  lader            the LADER regulariser alone (§1.4); form='official' (default) or 'paper'
  lade             lade_ce + alpha * lader (§1.5)
  logit_adjusted   Menon et al. 2021: CE on logits + tau * log(prior + 1e-12)
  focal            softmax focal loss (Lin et al. 2017), mean over the batch
  class_balanced   class-balanced weights by effective number (Cui et al. 2019), softmax or focal
  ldam             LDAM (Cao et al. 2019), with deferred re-weighting via set_epoch
  causal_norm      plain softmax CE on the logits of the Causal Norm classifier (Tang et al. 2020, spec §1.7;
                   lade.ResNet32(classifier='causal_norm'), whose eval-mode logits are the TDE ones)

Test time: each loss has ``test_time_form`` and ``test_time_adjust(logits, target_prior)``
(spec §2.1): softmax-trained models use PC (f - log p_s + log p_t); models whose training
already removed the training prior (LADE, Balanced Softmax, logit adjustment, class-balanced,
LDAM-DRW) use f + log p_t, and so does Causal Norm, whose TDE logits are its answer for a uniform
prior (Causal Norm = the TDE logits as they are, PC Causal Norm = + log p_t; spec §2.1, §2.3). A
uniform target (None) leaves the latter unchanged.
"""
import numpy as np

from lade import _C, _args, posthoc
from lade.priors import as_prior

# The LADE loss's alpha and remine_lambda where a caller may leave them out (the CLI's loss options,
# lade.decoupled.lade_retrain): the CIFAR recipe's. The C core's LADE_DEFAULT_ALPHA and
# LADE_DEFAULT_REMINE_LAMBDA (lade_ltmath.h, lade._C.lade_fit's defaults) must agree
# (tests/test_defaults.py).
LADE_DEFAULTS = {"alpha": 0.1, "remine_lambda": 0.01}

__all__ = ["SoftmaxCE", "CausalNormCE", "LADECELoss", "LADERLoss", "LADELoss", "LogitAdjustedLoss", "FocalLoss",
           "ClassBalancedLoss", "LDAMLoss", "softmax_ce", "lade_ce", "balanced_softmax", "lader", "lade_loss",
           "logit_adjusted", "focal", "class_balanced", "ldam", "ldam_drw", "make", "names", "test_time_form"]

_LADER_FORMS = {"official": 0, "paper": 1}


def _counts(counts):
    return np.ascontiguousarray(counts, dtype=np.int64)


class _Loss:
    """Shared test-time behaviour; `prior` is the training prior when the loss has one."""
    test_time_form = "pc"
    prior = None

    def test_time_adjust(self, logits, target_prior=None, source_prior=None):
        """Adjusted logits for a target prior (None = uniform), per test_time_form."""
        if self.test_time_form == "add_target":
            return posthoc.lade_adjust(logits, target_prior)
        source = self.prior if source_prior is None else source_prior
        if source is None:
            raise ValueError(f"{type(self).__name__}.test_time_adjust: argument 'source_prior' is needed for "
                             "PC adjustment (this loss was built without a training prior)")
        return posthoc.pc_adjust(logits, source, target_prior)


class SoftmaxCE(_Loss):
    """Plain softmax cross-entropy. `prior` (optional) is only used for PC at test time."""

    def __init__(self, prior=None):
        self.prior = None if prior is None else as_prior(prior, "prior", "lade.losses.SoftmaxCE")

    def __call__(self, logits, labels, grad=None):
        return _C.softmax_ce(logits, labels, grad)


class CausalNormCE(SoftmaxCE):
    """Plain softmax CE on the Causal Norm classifier's logits; at test time its TDE logits + log p_t."""
    test_time_form = "add_target"


class LADECELoss(_Loss):
    """LADE-CE = PriorCE = Balanced Softmax: CE on logits + log(prior + 1e-9)."""
    test_time_form = "add_target"

    def __init__(self, prior):
        self.prior = as_prior(prior, "prior", "lade.losses.LADECELoss")

    def __call__(self, logits, labels, grad=None):
        return _C.lade_ce(logits, labels, self.prior, grad)


class LADERLoss(_Loss):
    """The LADER regulariser alone (spec §1.4): -sum_c prior_c * (F_c - S_c - remine_lambda * S_c^2)."""
    test_time_form = "add_target"

    def __init__(self, prior, remine_lambda, form="official"):
        func = "lade.losses.LADERLoss"
        self.prior = as_prior(prior, "prior", "lade.losses.LADERLoss")
        if form not in _LADER_FORMS:
            raise ValueError(f"{func}: argument 'form' must be 'official' or 'paper', got {form!r}")
        self.remine_lambda = _args.real(remine_lambda, func, "remine_lambda", 0.0)
        self.form = form

    def __call__(self, logits, labels, grad=None):
        return _C.lader(logits, labels, self.prior, remine_lambda=self.remine_lambda, form=_LADER_FORMS[self.form],
                        grad=grad)


class LADELoss(_Loss):
    """LADE = LADE-CE + alpha * LADER (the CIFAR recipe's alpha 0.1 and remine_lambda 0.01 are in
    lade/app/configs). After a call, `last_terms` holds (lade_ce value, lader value)."""
    test_time_form = "add_target"

    def __init__(self, prior, alpha, remine_lambda, form="official"):
        func = "lade.losses.LADELoss"
        self.prior = as_prior(prior, "prior", "lade.losses.LADELoss")
        if form not in _LADER_FORMS:
            raise ValueError(f"{func}: argument 'form' must be 'official' or 'paper', got {form!r}")
        self.alpha = _args.real(alpha, func, "alpha", 0.0)
        self.remine_lambda = _args.real(remine_lambda, func, "remine_lambda", 0.0)
        self.form = form
        self.last_terms = None

    def __call__(self, logits, labels, grad=None):
        value, grad, ce, reg = _C.lade_loss(logits, labels, self.prior, alpha=self.alpha,
                                            remine_lambda=self.remine_lambda, form=_LADER_FORMS[self.form], grad=grad)
        self.last_terms = (ce, reg)
        return value, grad


class LogitAdjustedLoss(_Loss):
    """Logit-adjusted loss (Menon et al. 2021): CE on logits + tau * log(prior + 1e-12)."""
    test_time_form = "add_target"

    def __init__(self, prior, tau):
        self.prior = as_prior(prior, "prior", "lade.losses.LogitAdjustedLoss")
        self.offset = _C.log_prior(self.prior, tau)
        self.tau = float(tau)

    def __call__(self, logits, labels, grad=None):
        return _C.logit_adjusted(logits, labels, grad, offset=self.offset)


class FocalLoss(_Loss):
    """Softmax focal loss: mean_i (1 - p_i)^gamma * (-log p_i). gamma = 0 is softmax CE."""

    def __init__(self, gamma, prior=None):
        self.gamma = _args.real(gamma, "lade.losses.FocalLoss", "gamma", 0.0)
        self.prior = None if prior is None else as_prior(prior, "prior", "lade.losses.FocalLoss")

    def __call__(self, logits, labels, grad=None):
        return _C.focal(logits, labels, grad, gamma=self.gamma)


class ClassBalancedLoss(_Loss):
    """Class-balanced loss (Cui et al. 2019): w_c = (1 - beta) / (1 - beta^n_c), normalised to
    sum to C; loss = mean_i w_{y_i} * base_i with base 'softmax' (CE) or 'focal' (gamma)."""
    test_time_form = "add_target"

    def __init__(self, counts, beta, base="softmax", gamma=1.0):
        func = "lade.losses.ClassBalancedLoss"
        if base not in ("softmax", "focal"):
            raise ValueError(f"{func}: argument 'base' must be 'softmax' or 'focal', got {base!r}")
        self.weights = _C.effective_number_weights(_counts(counts), beta)
        self.gamma = _args.real(gamma, func, "gamma") if base == "focal" else 0.0
        if not self.gamma >= 0:
            raise ValueError(f"{func}: argument 'gamma' must be >= 0, got {gamma}")

    def __call__(self, logits, labels, grad=None):
        return _C.class_balanced(logits, labels, grad, weights=self.weights, gamma=self.gamma)


class LDAMLoss(_Loss):
    """LDAM (Cao et al. 2019): CE on s * (logits - m_y at the label), m_c proportional to n_c^(-1/4)
    with the largest = max_margin. `weights` (C,) gives a weighted mean as PyTorch's cross_entropy.
    Deferred re-weighting: with drw_epoch set, set_epoch(e) switches to class-balanced weights
    (beta drw_beta) from epoch drw_epoch on."""
    test_time_form = "add_target"

    def __init__(self, counts, max_margin, s, weights=None, drw_epoch=None, drw_beta=None):
        func = "lade.losses.LDAMLoss"
        counts = _counts(counts)
        self.margins = _C.ldam_margins(counts, max_margin)
        self.s = _args.real(s, func, "s", 0.0, lo_open=True)
        self.weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
        self.drw_epoch = drw_epoch
        if drw_epoch is not None:
            self._drw_weights = _C.effective_number_weights(counts, drw_beta)

    def set_epoch(self, epoch):
        """DRW: plain weights before drw_epoch, class-balanced weights from it on."""
        if self.drw_epoch is not None:
            self.weights = self._drw_weights if epoch >= self.drw_epoch else None

    def __call__(self, logits, labels, grad=None):
        return _C.ldam(logits, labels, grad, margin=self.margins, weights=self.weights, s=self.s, by_sum=True)


# ---- function forms -----------------------------------------------------------------------
def softmax_ce(logits, labels, grad=None):
    return _C.softmax_ce(logits, labels, grad)


def lade_ce(logits, labels, prior, grad=None):
    return _C.lade_ce(logits, labels, as_prior(prior, "prior", "lade.losses.lade_ce"), grad)


balanced_softmax = lade_ce


def lader(logits, labels, prior, remine_lambda, grad=None, form="official"):
    return LADERLoss(prior, remine_lambda, form)(logits, labels, grad)


def lade_loss(logits, labels, prior, alpha, remine_lambda, grad=None, form="official"):
    return LADELoss(prior, alpha, remine_lambda, form)(logits, labels, grad)


def logit_adjusted(logits, labels, prior, tau, grad=None):
    return LogitAdjustedLoss(prior, tau)(logits, labels, grad)


def focal(logits, labels, gamma, grad=None):
    return FocalLoss(gamma)(logits, labels, grad)


def class_balanced(logits, labels, counts, beta, base="softmax", gamma=1.0, grad=None):
    return ClassBalancedLoss(counts, beta, base, gamma)(logits, labels, grad)


def ldam(logits, labels, counts, max_margin, s, weights=None, grad=None):
    return LDAMLoss(counts, max_margin, s, weights)(logits, labels, grad)


def ldam_drw(counts, drw_epoch, beta, max_margin, s):
    """An LDAMLoss with deferred re-weighting; call .set_epoch(epoch) at every epoch start."""
    return LDAMLoss(counts, max_margin, s, None, drw_epoch, beta)


_REGISTRY = {
    "softmax_ce": SoftmaxCE,
    "lade_ce": LADECELoss,
    "balanced_softmax": LADECELoss,
    "lader": LADERLoss,
    "lade": LADELoss,
    "logit_adjusted": LogitAdjustedLoss,
    "focal": FocalLoss,
    "class_balanced": ClassBalancedLoss,
    "ldam": LDAMLoss,
    "ldam_drw": ldam_drw,
    "causal_norm": CausalNormCE,
}


def names():
    """The names `make` accepts."""
    return sorted(_REGISTRY)


def test_time_form(name):
    """The test-time adjustment ('pc' or 'add_target') of the loss ``make(name)`` builds."""
    if name not in _REGISTRY:
        raise ValueError(f"lade.losses.test_time_form: argument 'name' must be one of {names()}, got {name!r}")
    built_by = _REGISTRY[name]
    return (LDAMLoss if built_by is ldam_drw else built_by).test_time_form


def make(name, **kwargs):
    """Builds a loss by name, e.g. make('lade', prior=p, alpha=0.1, remine_lambda=0.01)."""
    if name not in _REGISTRY:
        raise ValueError(f"lade.losses.make: argument 'name' must be one of {names()}, got {name!r}")
    return _REGISTRY[name](**kwargs)
