"""Estimating an unknown target prior from unlabelled predictions, and adapting to it
(C core: csrc/ltmath/prior_shift.c). The paper assumes p_t known; this fills that gap.

Estimators are objects, fitted once on labelled held-out source logits and applied to any number of
unlabelled target sets::

    est = lade.prior_shift.Gated(lade.prior_shift.AutoFamilyEM()).fit(val_logits, val_labels, source_prior)
    res = est.estimate(test_logits)   # res.prior (C,), res.shift_test: is there a shift at all?
    res = est.adapt(test_logits)      # and res.probs (n, C): the test posteriors adapted to res.prior

EM, EmpiricalBayesEM, TiltedEM, AutoFamilyEM, SelectEM and LabelledEM estimate by EM on calibrated
posteriors, BBSE and RLLS from the confusion matrix; Gated(est) keeps "no shift" unless the shift test rejects it,
Shrunk(est) shrinks the estimate by its uncertainty (only estimators with an uncertainty model). A
combination that cannot work is refused when it is built.

One call, the recommended default (estimator(): EM in the tilted family, sparse or free, by
likelihood-ratio tests and cross-validation on the target rows, gated at GATE_LEVEL), or any estimator by
keywords::

    res = lade.prior_shift.adapt(test_logits, source_prior, val_logits, val_labels)
    res = lade.prior_shift.adapt(test_logits, source_prior, val_logits, val_labels, family="free", gate=None)

What each estimator does, and its keywords in adapt():

Methods:
  'em'   Saerens et al. 2002: EM re-estimation of the prior from calibrated posteriors. The
         posteriors are first calibrated by bias-corrected temperature scaling fitted on the
         held-out labelled source logits (Alexandari et al. 2020); without calibration data EM
         runs on softmax(test_logits) as is. EM takes SQUAREM steps (em_prior's accelerate: the
         same fixed point in several times fewer passes over the rows; res.iterations counts EM
         maps). The estimate is the MAP under a Dirichlet(1 +
         pseudo_count) prior; the default pseudo_count=1 is add-one smoothing: no class is driven
         to 0, and EM converges even where the maximum-likelihood estimate (pseudo_count=0, the
         original EM) drifts to a degenerate prior. With 100 classes and a weak model that drift is
         large: on a 16-epoch CIFAR-100-LT ResNet-32 the ML estimate of a uniform test prior was
         0.38 away in total variation (PC Softmax 20.8 % top-1 against 23.3 % with the true
         prior); with add-one smoothing 0.18 away (21.2 %). It weighs like C extra test rows, so
         it fades as the test set grows. Shift test: likelihood
         ratio 2 (LL(p_hat) - LL(p_ref)) at the maximum-likelihood estimate, chi-square with
         C - 1 degrees of freedom (Saerens et al. §3.3).
         EM is consistent only if the posteriors are calibrated per sample, not just on average.
         A weak model calibrated on few tail samples is not, and under backward shifts, where
         those tail samples dominate, EM can stay several points below the oracle. With
         calibration data, res.condition_number is that of the confusion matrix below, and a
         RuntimeWarning says when it exceeds cond_limit (the prior is then barely identifiable;
         EM still returns its estimate).
  'bbse' Lipton et al. 2018, as least squares over the simplex: with M[i][j] = P(pred i | y j)
         from the labelled calibration data (soft=True: mean calibrated probabilities, the
         default; soft=False: argmax counts) and mu[i] = P(pred i) on the test data, the prior is
         argmin_{q in simplex} sum_i (M q - mu)_i^2 / v_i + ridge |q - p_s|^2, v_i = (M p_cal)_i
         how often class i is predicted on the calibration data (a Pearson distance, so rarely
         predicted classes count; with M invertible and an interior solution this is M^-1 mu
         whatever the weights) (ridge > 0 shrinks towards no
         shift, as RLLS, Azizzadenesheli et al. 2019). A singular or noisy M still gives a valid
         prior. Needs only M invertible, not calibration, so it is robust where EM is not; its
         noise grows with M's condition number. When that 1-norm condition number exceeds
         cond_limit (or M is singular: a class absent from calib_labels, identical score
         columns, or with soft=False a class never predicted) a RuntimeWarning is issued and the
         estimate falls back to "no shift": the reference prior, so res.probs are the
         posteriors as they are (like a gated estimate).
         Shift test: Pearson chi-square of the test set's predicted-class counts against those
         expected without shift.

Gate (``gate``, default GATE_LEVEL = 0.05): the estimate is used only when the shift test rejects
"no shift" at that level; otherwise res.gated is True and the prior is the reference prior (the
model's own, see below), so on unshifted data the posteriors are left as they are in all but
about 5 % of test sets. Both tests count the calibration set's own noise (the null prior is
estimated from m calibration rows): EM's statistic is divided by 1 + n/m (conservative), BBSE's
Pearson cells add the variance of their expected counts. gate=None always adapts.

Shrinkage (``shrink_to='no_shift'`` towards the reference prior, or ``'uniform'``): the estimate
p_hat moves towards the anchor t by w = min(1, tr Cov(p_hat) / |p_hat - t|^2), the plug-in of the
weight that minimises the expected squared error of an unbiased estimate with that covariance
(James-Stein / Ledoit-Wolf linear shrinkage). tr Cov(p_hat) is the bootstrap width when
bootstrap > 0 (the variance of the replicates), otherwise analytic: for EM the inverse observed
Fisher information of the mixture likelihood on the simplex, for BBSE the delta method for
M^-1 mu with the sampling noise of both mu (test rows) and M (calibration rows). The analytic
widths are exact for well-separated classes (tests/test_prior_shift.py) but ignore the simplex
boundary, the smoothing and BBSE's constrained solve, so on weak models they overstate the
uncertainty and shrink too much: on a 5-epoch CIFAR-10-LT ResNet-32 (34 % top-1) EM's Fisher
width was 3-5x and BBSE's delta-method width 5-8x the bootstrap's. The bootstrap is cheap for
BBSE (about 1 s for 100 replicates with 100 classes) and slow for EM. Why linear shrinkage rather
than a fixed Dirichlet strength: the weight follows the data; a prior that is barely
identifiable (nearly singular information or confusion matrix) is shrunk all the way, a large
clear shift hardly at all. On synthetic data it cuts the error of small samples whose
prior is near the anchor by half or more and costs little when the prior is far from it (see
tests/test_prior_shift.py). res.shrink_weight, res.covariance_trace, res.unshrunk_prior.

A few labels (``labelled_counts``, EM only): labelled_counts[c] labelled target samples of class c
besides the unlabelled test_logits. A labelled sample's likelihood p_t(y) p(x|y) involves the prior
only through p_t(y), so its label is a hard count in EM's sufficient statistics. How the samples
were chosen matters: labelled_design='random' (drawn at random from the target, like the rest):
p <- (sum_i r_i(p) + counts) / (n + total), and the unlabelled rows have prior p.
labelled_design='per_class' (the default; up to k per class picked by label from the target set):
the unlabelled rows are what the selection left, with prior q, q_c = (N p_c - counts_c) / n; EM
estimates q from them and p = (n q + counts) / (n + total). res.prior is the whole target's p,
res.pool_prior the unlabelled rows' prior, which res.probs are adapted to.

Which logits: softmax(test_logits) should estimate the source posterior. For models trained
with plain softmax CE pass the raw logits; for LADE / Balanced Softmax pass f + log p_s
(``loss.test_time_adjust`` does not do this; use ``lade.posthoc.lade_adjust(f, p_s)``). With
calibration='bcts' a per-class offset is absorbed by the fitted biases, so either works.

Family (``family``, EM only): 'free' estimates any prior on the simplex (C - 1
parameters). 'tilt' estimates one parameter g of the tilted family p_g ∝ r * t^g, r the reference
prior below and t = ``tilt_prior`` (default: source_prior, the training label frequencies): the
long-tail direction, along which the head classes grow more common (g > 0) or less (g < 0), g = 0
being no shift. One parameter has a fraction of the free estimate's noise: with 100 classes and
1,000-5,000 unlabelled rows the free estimate is off by 0.27-0.5 in L1 mostly from sampling noise,
not from miscalibration (benchmarks/prior_noise.py measures both on a finished run). 'auto' chooses
between the two by the likelihood-ratio test of the tilted family within the free one,
2 (LL(free) - LL(tilt)), chi-square with C - 2 dof (with the same calibration-noise correction as
the shift test): the free estimate when it rejects the family at level ``gate`` (GATE_LEVEL when
gate is None), else the tilted one (res.family says which,
res.family_test has the test). The shift test of 'tilt', and of 'auto' when it picks the family,
is the 1-dof test of g = 0, which detects a shift along the family with far fewer rows than the
C - 1 dof test. Only the shifts of spec §2.3 lie exactly in the family (CIFAR-100-LT's shifted
tests are r * p_s^g), so its gain there is the best case. Off the family 'auto' tries a sparse
estimate before the free one: the maximum-likelihood prior on the classes the free estimate ranks first
(the support chosen by BIC, as under 'select'), kept when BIC prefers it to the free prior, the
likelihood-ratio test of it within the free one (C - support dof) does not reject it, and the calibration
confusion matrix is well-conditioned (cond_limit; the ranking needs a classifier that separates the
classes). Where only a few classes are present this removes the mass the free estimate and its smoothing
leave on absent ones (the suite of shifts in docs/label-shift.md). ``AutoFamilyEM(sparse=False)``
skips it. A constant tilt_prior (balanced training) makes the family the reference prior alone.

Family 'select' (EM only): the estimate's family chosen by BIC, -2 LL / noise + log(n) * parameters
(select_prior; noise the calibration-noise factor of the shift test): no shift (0 parameters), the
tilted family (1), the maximum-likelihood prior on the j classes the free estimate ranks first (j - 1,
j on a geometric grid: a target where only some classes are present), or the free maximum-likelihood
prior (C - 1; no smoothing). res.family is 'none', 'tilt', 'sparse' or 'free', res.support the classes
kept; the shift test is the likelihood ratio of no shift within the chosen family (dof its parameters),
and 'none' is gated. Unlike the fixed pseudo count, nothing pulls a sparse target back to a dense prior.

Smoothing whose strength follows the data (``pseudo_count='auto'``, free EM): the prior is taken as a
draw from Dirichlet(A r), r the reference prior, and A maximises the Dirichlet-multinomial evidence of
the maximum-likelihood estimate's soft counts (empirical Bayes in the spirit of MAPLS, Ye et al. 2024;
em_prior_eb); EM then runs with the pseudo counts A r. Counts that look like a multinomial draw from r
give a large A (no shift), dispersed ones (sparse or strongly shifted targets) a small one. A confusing
classifier's soft counts are noisier than label counts, so A errs small (too little smoothing) on weak
models. res.smoothing_strength = A.

Multi-label (independent sigmoid outputs, docs/label-shift.md "Multi-label"): every label j has a training
marginal m_s[j] = P(y_j = 1) and an unknown target one. em_marginals runs the EM above with two classes on
each label on its own, from calibrated sigmoid probabilities; adapt_multilabel is the one call: it estimates
the target marginals of unlabelled test logits and returns them with the corrected probabilities
(lade.posthoc.pc_sigmoid) in a MultilabelShiftResult. It fits no calibration: the sigmoid of test_logits
must already be calibrated under source_marginals.

Reference prior: the prior the (calibrated) posteriors embody. With calibration data it is the
mean calibrated posterior over the calibration rows (Alexandari et al. 2020), so that EM's fixed
point without shift is exactly "no shift" even when the posteriors are not calibrated
(calibration='ts' or 'none'); with calibration='bcts' this equals the calibration label
frequencies (every class must appear in calib_labels). Without calibration data it is
source_prior.
"""
import inspect
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from lade import _C, _args, posthoc
from lade.priors import as_float32, prior_from_labels

__all__ = ["adapt", "estimator", "Estimator", "EM", "EmpiricalBayesEM", "TiltedEM", "AutoFamilyEM", "SelectEM",
           "LabelledEM", "BBSE", "RLLS", "Gated", "Shrunk", "PriorShiftResult", "GATE_LEVEL", "em_prior", "em_prior_eb",
           "tilted_prior", "select_prior", "sparse_cv",
           "bbse_prior", "rlls_prior", "mean_posterior", "reweight", "shifted_test_indices", "em_marginals",
           "adapt_multilabel", "MultilabelShiftResult"]

_FUNC = "lade.prior_shift.adapt"
_REWEIGHT, _TILTED = "lade.prior_shift.reweight", "lade.prior_shift.tilted_prior"
COND_LIMIT = 1e4
GATE_LEVEL = 0.05  # the default significance level of adapt's gate
RLLS_REG = 0.01  # RLLS's scale of its regulariser bound (rlls_prior), as in the public implementations
_TILT_MAX_ITER = 200  # Newton steps of tilted_prior (it converges in under 20 on real models)
SPARSE_FOLDS = 5  # folds of the cross-validation that checks the sparse step (sparse_cv)
# AutoFamilyEM's free estimate: a light pseudo count, since add-one smoothing (C pseudo-rows) outweighs a
# target set of a few hundred images and pulls a sparse or strongly shifted prior back to a dense one
AUTO_PSEUDO_COUNT = 0.1
# the dense alternative that the sparse estimate must predict unseen target rows better than: every class
# present, add-one smoothed
SPARSE_CV_PSEUDO_COUNT = 1.0


@dataclass
class PriorShiftResult:
    prior: np.ndarray            # estimated target prior (C,), floored at 1e-8
    probs: np.ndarray            # adapted test posteriors (n, C)
    method: str
    reference_prior: np.ndarray  # the prior the calibrated posteriors embody
    calibration: object = None   # the fitted posthoc.TemperatureScaling, or None
    iterations: int = 0          # EM iterations
    converged: bool = True
    condition_number: float = float("nan")  # of the calibration confusion matrix (needs calibration data)
    fell_back: bool = False      # BBSE fell back to no shift: prior = reference_prior
    shift_test: dict = field(default_factory=dict)
    interval: tuple = None       # (lo, hi) per-class bootstrap interval, or None
    level: float = None
    replicates: np.ndarray = None
    gated: bool = False          # the shift test did not reject "no shift" at `gate`: prior = reference_prior
    pool_prior: np.ndarray = None  # the prior `probs` are adapted to: `prior`, or with per-class labels that of
                                   # the unlabelled rows
    shrink_weight: float = 0.0   # weight of the anchor in the shrunk prior (shrink_to)
    covariance_trace: float = float("nan")  # trace of the estimate's covariance (shrink_to)
    unshrunk_prior: np.ndarray = None
    family: str = "free"         # the family of the estimate: 'free', 'tilt', 'sparse' or 'none' (family='auto'
                                 # and 'select' pick one)
    tilt_exponent: float = float("nan")  # g of the tilted family's estimate (family 'tilt' or 'auto')
    family_test: dict = field(default_factory=dict)  # family='auto': the test of the tilted family in the free one
                                                     # (and under 'sparse', the sparse prior's)
    support: int = None          # a sparse estimate: the number of classes it keeps
    smoothing_strength: float = float("nan")  # pseudo_count='auto': the Dirichlet strength A chosen from the data
    rho: float = float("nan")    # RLLS: the weight of its penalty |w - 1|


def reweight(probs, from_prior, to_prior, out=None):
    """Posteriors moved from one prior to another: p * to / from, renormalised per row."""
    return _C.reweight(probs, as_float32(from_prior, "from_prior", _REWEIGHT),
                       as_float32(to_prior, "to_prior", _REWEIGHT), out)


def mean_posterior(probs):
    """The mean row of `probs` (floored at 1e-8, renormalised): the prior calibrated posteriors
    embody on their own calibration data."""
    return _C.mean_posterior(probs)


def em_prior(probs, reference_prior, pseudo_count=0.0, tol=1e-8, max_iter=2000, accelerate=False):
    """EM (Saerens 2002) on posteriors `probs` that embody `reference_prior`; pseudo_count > 0
    gives the MAP estimate under a Dirichlet(1 + pseudo_count) prior. accelerate=True takes SQUAREM
    steps (the same fixed point in fewer passes over the rows; iterations then counts EM maps).
    Returns (prior, iterations, converged, loglik)."""
    ref = as_float32(reference_prior, "reference_prior", "lade.prior_shift.em_prior")
    return _C.em_prior(probs, ref, pseudo_count=pseudo_count, tol=tol, max_iter=max_iter, accelerate=accelerate)


def em_marginals(probs, source_marginals, pseudo_count=0.0, tol=1e-8, max_iter=2000):
    """Per-label EM (Saerens 2002 with two classes, every label on its own) on sigmoid probabilities `probs`
    (n, C) that embody source_marginals (C,), each in (0, 1): for each label,
    p <- (sum_i q'_i + pseudo_count) / (n + 2 pseudo_count), q' the probability moved from the source
    marginal to p, until p moves by less than tol (pseudo_count > 0: the MAP under Beta(1 + pseudo_count,
    1 + pseudo_count)). Returns (marginals float32 (C,), iterations int32 (C,), converged bool (C,), loglik
    float64 (C,)); with pseudo_count 0, 2 * loglik[j] is the likelihood-ratio statistic of "label j did not
    shift" (chi-square, 1 dof)."""
    source = as_float32(source_marginals, "source_marginals", "lade.prior_shift.em_marginals")
    marginals, iterations, converged, loglik = _C.em_marginals(probs, source, pseudo_count=pseudo_count, tol=tol,
                                                               max_iter=max_iter)
    return marginals, iterations, converged.view(bool), loglik


def bbse_prior(calib_probs, calib_labels, test_probs, source_prior, soft=True, ridge=0.0, cond_limit=COND_LIMIT):
    """BBSE (Lipton 2018) solved as least squares over the simplex. Returns (prior,
    condition_number, fell_back); warns on fallback."""
    func = "lade.prior_shift.bbse_prior"
    source_prior = as_float32(source_prior, "source_prior", func)
    out, cond, fell_back = _C.bbse_prior(calib_probs, calib_labels, test_probs, source_prior,
                                         cond_limit, soft=soft, ridge=ridge)
    if fell_back:
        warnings.warn(f"{func}: the calibration confusion matrix is ill-conditioned (1-norm condition number "
                      f"{cond:.3g} > cond_limit {cond_limit:.3g}); falling back to no shift (the source prior)",
                      RuntimeWarning, stacklevel=2)
    return out, cond, fell_back


def rlls_prior(calib_scores, calib_labels, target_scores, soft=True, reg=RLLS_REG, delta=0.05):
    """RLLS (Azizzadenesheli et al. 2019): the importance weights w >= 0 minimising |A w - mu| + rho |w - 1|
    (A the joint confusion of the labelled calibration data, mu the test's mean prediction; soft: mean
    probabilities, else argmax counts), rho = reg * the paper's bound on A's error at confidence 1 - delta.
    Returns (prior, rho): prior = w * the calibration label frequencies, renormalised."""
    return _C.rlls_prior(calib_scores, calib_labels, target_scores, soft=soft, reg=reg, delta=delta)


def tilted_prior(probs, reference_prior, tilt_prior, tol=1e-10, max_iter=_TILT_MAX_ITER):
    """Maximum-likelihood prior within the tilted family p_g ∝ reference_prior * tilt_prior^g, on
    posteriors `probs` that embody reference_prior. Returns (prior, g, loglik, iterations,
    converged); 2 * loglik is the likelihood-ratio statistic of g = 0 (1 dof)."""
    return _C.tilt_prior(probs, as_float32(reference_prior, "reference_prior", _TILTED),
                          as_float32(tilt_prior, "tilt_prior", _TILTED),
                         tol=tol, max_iter=max_iter)


def em_prior_eb(probs, reference_prior, tol=1e-8, max_iter=2000):
    """EM with a Dirichlet(A * reference_prior) prior whose strength A is chosen from the data: the
    Dirichlet-multinomial evidence of the maximum-likelihood estimate's soft counts (empirical Bayes,
    in the spirit of MAPLS). A large A keeps the estimate near no shift, a small one leaves it free.
    Returns (prior, strength, iterations, converged, loglik)."""
    return _C.em_prior_eb(probs, as_float32(reference_prior, "reference_prior"), tol=tol, max_iter=max_iter)


SELECT_KINDS = ("none", "tilt", "sparse", "free")  # select_prior's candidates, by their code in the C core


def select_prior(probs, reference_prior, tilt_prior=None, penalty=None, noise=1.0, tol=1e-8, max_iter=2000):
    """The estimate's family chosen by an information criterion, -2 loglik / noise + penalty * parameters
    (default penalty log n: BIC): no shift (0 parameters), the tilted family along tilt_prior (1; left
    out when tilt_prior is None), the maximum-likelihood prior on the j classes the free estimate ranks
    first (j - 1, j on a geometric grid), or the free maximum-likelihood prior (C - 1). Returns (prior,
    kind in SELECT_KINDS, support, loglik, criterion)."""
    func = "lade.prior_shift.select_prior"
    n = np.shape(probs)[0] if np.ndim(probs) == 2 else 0
    penalty = float(np.log(max(n, 1))) if penalty is None else _args.real(penalty, func, "penalty", 0.0)
    tilt = None if tilt_prior is None else as_float32(tilt_prior, "tilt_prior")
    prior, kind, support, loglik, criterion = _C.select_prior(
        probs, as_float32(reference_prior, "reference_prior"), tilt, penalty=penalty,
        noise=_args.real(noise, func, "noise", 1.0), tol=tol, max_iter=max_iter)
    return prior, SELECT_KINDS[kind], support, loglik, criterion


def sparse_cv(probs, reference_prior, pseudo_count=SPARSE_CV_PSEUDO_COUNT, noise=1.0, folds=SPARSE_FOLDS, seed=0,
              tol=1e-8, max_iter=2000):
    """Whether select_prior's sparse estimate predicts unseen rows: K-fold cross-validation on the rows of
    `probs` (posteriors that embody reference_prior), the folds drawn with `seed`. On each fold's complement
    the sparse estimate (select_prior without the tilted family, BIC, `noise`) and the free EM estimate with
    `pseudo_count` are fitted; each scores the fold's rows by their log-likelihood
    sum_i log sum_c (p_c / reference_prior_c) probs[i, c]. Returns (sparse score, free score), the sums over
    the folds; the sparse score is -inf when BIC does not pick a sparse prior on some fold."""
    scores = _C.sparse_cv(probs, as_float32(reference_prior, "reference_prior"), pseudo_count=pseudo_count,
                          noise=noise, folds=folds, seed=seed, tol=tol, max_iter=max_iter)
    return float(scores[0]), float(scores[1])


# ---- estimators as objects ------------------------------------------------------------------------------

_PREFIX = "lade.prior_shift."


def _renamed(e, func, arguments=None):
    """`e`, an error of this module ("lade.prior_shift.X: ..."), as raised by `func`, the function the user
    called, its argument names mapped by `arguments` (the callee's name -> func's); any other error unchanged."""
    head, sep, rest = str(e).partition(": ")
    if not sep or not head.startswith(_PREFIX) or head == func:
        return e
    for callee, caller in (arguments or {}).items():
        rest = rest.replace(f"argument '{callee}'", f"argument '{caller}'")
    return type(e)(f"{func}: {rest}")


@dataclass
class _Fit:
    """What Estimator.fit learned from the labelled source logits."""
    source_prior: np.ndarray
    calib_labels: np.ndarray = None
    calibration: object = None   # posthoc.TemperatureScaling, or None
    calib_probs: np.ndarray = None
    reference_prior: np.ndarray = None
    absent: np.ndarray = None    # the classes without a held-out sample
    _conditions: dict = field(default_factory=dict)

    def condition_number(self, soft):
        """The 1-norm condition number of the calibration confusion matrix (soft: mean calibrated probabilities,
        else argmax counts), computed once per fit: it depends on the held-out data alone."""
        if soft not in self._conditions:
            self._conditions[soft] = _C.confusion_condition(self.calib_probs, self.calib_labels, soft)
        return self._conditions[soft]

    def noise(self, n):
        """The calibration-noise factor of the likelihood-ratio tests for n test rows: the reference prior is
        itself estimated from the m calibration rows, and dividing the statistics by 1 + n / m bounds their
        inflation by that noise (the mean posterior varies no more than label frequencies would), so the
        tests stay at or below their level."""
        return 1.0 + n / self.calib_probs.shape[0] if self.calib_probs is not None else 1.0

    def probs(self, logits):
        return self.calibration(logits) if self.calibration else posthoc.softmax(logits)


class Estimator:
    """A target-prior estimator, in the style of scikit-learn and QuaPy:

        est = lade.prior_shift.EM().fit(calib_logits, calib_labels, source_prior)
        res = est.estimate(test_logits)   # res.prior, res.shift_test, res.interval (bootstrap > 0)
        res = est.adapt(test_logits)      # the same, and res.probs: the test posteriors adapted to res.prior

    fit() learns the calibration on labelled held-out source logits (calibration 'bcts': bias-corrected
    temperature scaling, 'ts', or 'none') and the reference prior the calibrated posteriors embody; with
    calib_logits None the posteriors are softmax(logits) and the reference prior is source_prior. One fit
    serves any number of target sets. Gated(...) and Shrunk(...) wrap an estimator."""

    method = "em"
    uncertainty = False  # whether the estimate has an analytic covariance (Shrunk needs one)
    target_arguments = ()  # what estimate() and adapt() take besides the test logits

    def __init__(self, calibration="bcts", cond_limit=COND_LIMIT):
        func = self._func()
        if calibration not in ("bcts", "ts", "none"):
            raise ValueError(f"{func}: argument 'calibration' must be 'bcts', 'ts' or 'none', got {calibration!r}")
        self.calibration, self.cond_limit = calibration, _args.real(cond_limit, func, "cond_limit")
        self._fitted = None

    @classmethod
    def _func(cls, method=None):
        return f"{_PREFIX}{cls.__name__}{'.' + method if method else ''}"

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"

    def fit(self, calib_logits, calib_labels, source_prior):
        """Learns the calibration from labelled source logits (calib_logits (m, C) float32, calib_labels (m,)
        int64; both None: no calibration data) and the training prior source_prior (C,). Returns self."""
        func = self._func("fit")
        try:
            source = as_float32(source_prior, "source_prior", func)
            if (calib_logits is None) != (calib_labels is None):
                raise ValueError(f"{func}: arguments 'calib_logits' and 'calib_labels' go together, got only "
                                 f"{'calib_labels' if calib_logits is None else 'calib_logits'}")
            # a one-row stand-in for the test logits: this checks the source prior and the calibration data
            _C.check_adapt(source, np.zeros((1, source.shape[0]) if source.ndim == 1 else (1, 1), np.float32),
                           calib_logits, calib_labels)
        except (ValueError, TypeError, FloatingPointError) as e:
            raise _renamed(e, func) from None
        fit = _Fit(source_prior=source, reference_prior=source)
        if calib_logits is not None:
            if self.calibration == "bcts":
                try:
                    prior_from_labels(calib_labels, source.shape[0])
                except ValueError as e:
                    raise ValueError(f"{func}: argument 'calib_labels' must contain every class for "
                                     f"bias-corrected calibration ({e})") from None
            if self.calibration != "none":
                fit.calibration = posthoc.fit_temperature(calib_logits, calib_labels, bias=self.calibration == "bcts")
            fit.calib_labels = calib_labels
            fit.absent = np.flatnonzero(np.bincount(calib_labels, minlength=source.shape[0]) == 0)
            fit.calib_probs = fit.probs(calib_logits)
            fit.reference_prior = mean_posterior(fit.calib_probs)
        self._fitted = fit
        return self

    def estimate(self, test_logits, **target):
        """The estimated prior of the unlabelled test_logits (n, C): a PriorShiftResult without probs."""
        return self._run(test_logits, target, "estimate")[0]

    def adapt(self, test_logits, **target):
        """estimate(), and res.probs: the calibrated test posteriors moved to the estimated prior."""
        res, probs, fit = self._run(test_logits, target, "adapt")
        res.probs = reweight(probs, fit.reference_prior, res.pool_prior)
        return res

    def _run(self, test_logits, target, method):
        func = self._func(method)
        fit = self._fitted
        if fit is None:
            raise RuntimeError(f"{func}: the estimator is not fitted; call fit(calib_logits, calib_labels, "
                               "source_prior) first")
        unknown = sorted(set(target) - set(self.target_arguments))
        if unknown:
            takes = "".join(f", {a}" for a in self.target_arguments)
            raise TypeError(f"{func}: unexpected argument {unknown[0]!r}; it takes test_logits{takes}")
        try:
            _C.check_adapt(fit.source_prior, test_logits, None, None)
            probs = fit.probs(test_logits)
            res = self._estimate(probs, fit, **target)
        except (ValueError, TypeError, FloatingPointError) as e:
            raise _renamed(e, func) from None
        res.pool_prior = res.prior if res.pool_prior is None else res.pool_prior
        return res, probs, fit

    def _result(self, fit):
        return PriorShiftResult(prior=None, probs=None, method=self.method, reference_prior=fit.reference_prior,
                                calibration=fit.calibration)

    def _estimate(self, probs, fit):
        """Fills a PriorShiftResult (prior, shift_test and the estimator's diagnostics) from calibrated
        test posteriors."""
        raise NotImplementedError


def _lr_test(loglik, dof, noise, test):
    stat = max(2.0 * loglik, 0.0) / noise
    return {"statistic": stat, "dof": dof, "p_value": _C.chi2_sf(stat, max(dof, 1)), "test": test}


_SAERENS_TEST = "likelihood ratio (Saerens 2002), chi-square"


class _EMEstimator(Estimator):
    """The EM estimators: their iteration limits, and the check of the calibration confusion matrix
    (soft: mean calibrated probabilities, else argmax counts) that says when the estimate is unreliable."""

    def __init__(self, tol=1e-8, max_iter=2000, soft=True, calibration="bcts", cond_limit=COND_LIMIT):
        super().__init__(calibration, cond_limit)
        func = self._func()
        self.tol, self.max_iter = _args.real(tol, func, "tol"), _args.whole(max_iter, func, "max_iter", 1)
        self.soft = bool(soft)

    def _ml_loglik(self, probs, fit):
        """The log-likelihood ratio of the maximum-likelihood prior against no shift (the shift test's)."""
        return _C.em_prior(probs, fit.reference_prior, pseudo_count=0.0, tol=self.tol, max_iter=self.max_iter,
                           accelerate=True)[3]

    def _warn_unconverged(self, res):
        if not res.converged:
            warnings.warn(f"{self._func()}: EM did not converge in {self.max_iter} iterations (tol {self.tol:g})",
                          RuntimeWarning, stacklevel=5)

    def _check_confusion(self, res, fit):
        """res.condition_number of the calibration confusion matrix, and a warning when the estimate cannot be
        checked against it or it is ill-conditioned (needs calibration data)."""
        if fit.calib_probs is None:
            return
        res.condition_number = fit.condition_number(self.soft)
        absent = fit.absent
        if absent.size:
            warnings.warn(f"{self._func()}: the held-out set has no sample of class(es) "
                          f"{', '.join(map(str, absent[:5]))}{' ...' if absent.size > 5 else ''}, so the "
                          "confusion matrix is singular and the EM estimate cannot be checked against it",
                          RuntimeWarning, stacklevel=5)
        elif not res.condition_number <= self.cond_limit:
            warnings.warn(f"{self._func()}: the calibration confusion matrix is ill-conditioned (1-norm condition "
                          f"number {res.condition_number:.3g} > cond_limit {self.cond_limit:.3g}): the classifier "
                          "barely separates some classes, so the EM estimate is unreliable", RuntimeWarning,
                          stacklevel=5)

    def _free(self, probs, fit, pseudo_count):
        """The free EM estimate (MAP under Dirichlet(1 + pseudo_count)) with its checks and its shift test.
        Returns (result, the maximum-likelihood log-likelihood ratio against no shift)."""
        res = self._result(fit)
        res.prior, res.iterations, res.converged, loglik = _C.em_prior(
            probs, fit.reference_prior, pseudo_count=pseudo_count, tol=self.tol, max_iter=self.max_iter,
            accelerate=True)
        self._warn_unconverged(res)
        self._check_confusion(res, fit)
        if pseudo_count != 0:  # the likelihood-ratio test needs the maximum-likelihood estimate
            loglik = self._ml_loglik(probs, fit)
        res.shift_test = _lr_test(loglik, fit.source_prior.shape[0] - 1, fit.noise(probs.shape[0]), _SAERENS_TEST)
        return res, loglik


def _pseudo_count(value, func):
    return _args.real(value, func, "pseudo_count", 0.0)


def _bootstrap_options(obj, bootstrap, level, seed):
    func = obj._func()
    obj.bootstrap = _args.whole(bootstrap, func, "bootstrap", 0, 10 ** 6)
    obj.level, obj.seed = _args.real(level, func, "level"), _args.whole(seed, func, "seed", 0, 2 ** 64 - 1)


def _add_interval(res, replicates, level):
    lo, hi = _C.bootstrap_interval(replicates, level)
    res.interval, res.level, res.replicates = (lo, hi), float(level), replicates


class EM(_EMEstimator):
    """Saerens et al. 2002 on calibrated posteriors (SQUAREM-accelerated), the MAP estimate under a
    Dirichlet(1 + pseudo_count) prior: 1 is add-one smoothing, 0 plain MLLS (with BCTS: Alexandari et al.
    2020). bootstrap > 0 adds a per-class percentile interval at `level` (the test rows resampled, seeded)."""

    uncertainty = True

    def __init__(self, pseudo_count=1.0, bootstrap=0, level=0.95, seed=0, **options):
        super().__init__(**options)
        self.pseudo_count = _pseudo_count(pseudo_count, self._func())
        _bootstrap_options(self, bootstrap, level, seed)

    def _estimate(self, probs, fit):
        res, _ = self._free(probs, fit, self.pseudo_count)
        if self.bootstrap:
            _add_interval(res, _C.em_bootstrap(probs, fit.reference_prior, self.bootstrap,
                                               pseudo_count=self.pseudo_count, tol=self.tol, max_iter=self.max_iter,
                                               seed=self.seed), self.level)
        return res

    def _covariance_trace(self, probs, fit, prior):
        return _C.em_covariance_trace(probs, fit.reference_prior, prior)


class EmpiricalBayesEM(_EMEstimator):
    """EM with a Dirichlet(A r) prior, r the reference prior and A the strength that maximises the
    Dirichlet-multinomial evidence of the maximum-likelihood estimate's soft counts (em_prior_eb; in the
    spirit of MAPLS, Ye et al. 2024). res.smoothing_strength = A."""

    uncertainty = True

    def _estimate(self, probs, fit):
        res = self._result(fit)
        res.prior, res.smoothing_strength, res.iterations, res.converged, _ = _C.em_prior_eb(
            probs, fit.reference_prior, tol=self.tol, max_iter=self.max_iter)
        self._warn_unconverged(res)
        self._check_confusion(res, fit)
        res.shift_test = _lr_test(self._ml_loglik(probs, fit), fit.source_prior.shape[0] - 1,
                                  fit.noise(probs.shape[0]), _SAERENS_TEST)
        return res

    _covariance_trace = EM._covariance_trace


class _FamilyEM(_EMEstimator):
    """An EM estimator with a tilted family p_g ∝ r * t^g, t = tilt_prior (default: the source prior, the
    long-tail direction)."""

    def __init__(self, tilt_prior=None, **options):
        super().__init__(**options)
        self.tilt_prior = None if tilt_prior is None else as_float32(tilt_prior, "tilt_prior", self._func())

    def _tilt(self, fit):
        if self.tilt_prior is None:
            return fit.source_prior
        if self.tilt_prior.shape != fit.source_prior.shape:
            raise ValueError(f"{self._func()}: argument 'tilt_prior' must have shape {fit.source_prior.shape} like "
                             f"source_prior, got {self.tilt_prior.shape}")
        return self.tilt_prior

    def _tilted(self, probs, fit):
        prior, g, loglik, iterations, converged = tilted_prior(probs, fit.reference_prior, self._tilt(fit))
        if not converged:
            warnings.warn(f"{self._func()}: the tilted family's fit did not converge in {_TILT_MAX_ITER} "
                          "iterations", RuntimeWarning, stacklevel=5)
        return prior, g, loglik, iterations, converged


_TILT_TEST = "likelihood ratio of no shift within the tilted family, chi-square"


class TiltedEM(_FamilyEM):
    """The maximum-likelihood prior within the tilted family (one parameter g; g = 0 is no shift). The
    shift test is the 1-dof test of g = 0."""

    def _estimate(self, probs, fit):
        res = self._result(fit)
        res.prior, res.tilt_exponent, loglik, res.iterations, res.converged = self._tilted(probs, fit)
        self._check_confusion(res, fit)
        res.family = "tilt"
        res.shift_test = _lr_test(loglik, 1, fit.noise(probs.shape[0]), _TILT_TEST)
        return res


class AutoFamilyEM(_FamilyEM):
    """The tilted estimate, unless the likelihood-ratio test of the tilted family within the free one,
    2 (LL(free) - LL(tilt)) with C - 2 dof, rejects it at `level`; then (sparse=True) the maximum-likelihood
    prior on the classes the free estimate ranks first (select_prior's support, chosen by BIC) when BIC prefers
    it to the free prior, its own test within the free one (C - support dof) does not reject it, the
    calibration confusion matrix is well-conditioned (the ranking needs a classifier that separates the
    classes), and (sparse_cv=True) it predicts unseen target rows at least as well as the dense alternative,
    the add-one smoothed free estimate (SPARSE_FOLDS-fold cross-validated likelihood on the target rows,
    sparse_cv); else the free EM estimate (pseudo_count, AUTO_PSEUDO_COUNT: light, so that it does not pull a
    sparse or strongly shifted prior back to a dense one). res.family says which ('tilt', 'sparse', 'free'),
    res.support the classes kept, res.family_test the tests.

    Why the sparse step: with a few hundred images of a few classes, the free estimate leaves mass on the
    classes that are absent and the smoothing adds more (on the 200-epoch CIFAR-100-LT PC Softmax model, 2
    classes present: 61.0 % against 77.8 % for the sparse estimate; docs/label-shift.md). Why the guards: a
    support chosen from a wrong ranking drops present classes, which are then never predicted (an 18.6 %
    CIFAR-10 model lost up to 67 points on a Dirichlet(0.3) draw; its confusion matrix is ill-conditioned).
    Why the cross-validation: on Dirichlet targets most classes are present but many with little mass; BIC and
    the likelihood-ratio test, fitted and judged on the same rows, then keep a support that drops some of them
    (docs/label-shift.md has the suite before and after)."""

    def __init__(self, pseudo_count=AUTO_PSEUDO_COUNT, level=GATE_LEVEL, sparse=True, sparse_cv=True, **options):
        super().__init__(**options)
        func = self._func()
        self.pseudo_count = _pseudo_count(pseudo_count, func)
        self.level = _args.real(level, func, "level", 0.0, 1.0, lo_open=True)
        self.sparse, self.sparse_cv = bool(sparse), bool(sparse_cv)

    def _estimate(self, probs, fit):
        res, loglik = self._free(probs, fit, self.pseudo_count)
        classes, noise = fit.source_prior.shape[0], fit.noise(probs.shape[0])
        tilted, res.tilt_exponent, tilt_loglik, iterations, converged = self._tilted(probs, fit)
        fstat, fdof = max(2.0 * (loglik - tilt_loglik), 0.0) / noise, max(classes - 2, 1)
        res.family_test = {"statistic": fstat, "dof": fdof, "p_value": _C.chi2_sf(fstat, fdof),
                           "test": "likelihood ratio of the tilted family within the free one, chi-square"}
        if not res.family_test["p_value"] < self.level:
            res.prior, res.family, res.iterations, res.converged = tilted, "tilt", iterations, converged
            res.shift_test = _lr_test(tilt_loglik, 1, noise, _TILT_TEST)
        elif self.sparse and fit.calib_probs is not None and res.condition_number <= self.cond_limit:
            self._sparse(res, probs, fit, loglik, noise)
        return res

    def _sparse(self, res, probs, fit, loglik, noise):
        """res becomes the sparse estimate when BIC picks one, its test within the free one (loglik: the
        free maximum-likelihood prior's) does not reject it, and it predicts unseen target rows at least as well
        as the add-one smoothed free estimate (sparse_cv, SPARSE_FOLDS folds; in res.family_test['sparse']). The
        shift test stays the free one's."""
        prior, kind, support, sparse_loglik, _ = select_prior(probs, fit.reference_prior, None, noise=noise,
                                                              tol=self.tol, max_iter=self.max_iter)
        if kind != "sparse":
            return
        stat, dof = max(2.0 * (loglik - sparse_loglik), 0.0) / noise, fit.source_prior.shape[0] - support
        res.family_test["sparse"] = {"statistic": stat, "dof": dof, "p_value": _C.chi2_sf(stat, dof),
                                     "support": support,
                                     "test": "likelihood ratio of the sparse prior within the free one, chi-square"}
        if res.family_test["sparse"]["p_value"] < self.level:
            return
        if not self.sparse_cv:
            res.prior, res.family, res.support = prior, "sparse", support
            return
        if probs.shape[0] < 2:  # nothing to cross-validate on
            return
        folds = min(SPARSE_FOLDS, probs.shape[0])
        scores = sparse_cv(probs, fit.reference_prior, noise=noise, folds=folds, tol=self.tol, max_iter=self.max_iter)
        res.family_test["sparse"]["cross_validation"] = {"sparse": scores[0], "free": scores[1], "folds": folds}
        if scores[0] >= scores[1]:
            res.prior, res.family, res.support = prior, "sparse", support


class SelectEM(_FamilyEM):
    """The estimate's family chosen by BIC (select_prior): no shift, the tilted family, the prior on the j
    classes the free estimate ranks first, or the free maximum-likelihood prior. res.family is 'none', 'tilt',
    'sparse' or 'free', res.support the classes kept; the shift test is the likelihood ratio of no shift within
    the chosen family (dof its parameters), and 'none' is never a shift."""

    def _estimate(self, probs, fit):
        res = self._result(fit)
        noise = fit.noise(probs.shape[0])
        res.prior, res.family, res.support, loglik, _ = select_prior(probs, fit.reference_prior, self._tilt(fit),
                                                                     noise=noise, tol=self.tol,
                                                                     max_iter=self.max_iter)
        self._check_confusion(res, fit)
        dof = {"none": 0, "tilt": 1, "sparse": res.support - 1, "free": fit.source_prior.shape[0] - 1}[res.family]
        stat = max(2.0 * loglik, 0.0) / noise
        # (a support of one class has no free parameter: its test counts one, like the tilt's)
        res.shift_test = {"statistic": stat, "dof": dof,
                          "p_value": 1.0 if res.family == "none" else _C.chi2_sf(stat, max(dof, 1)),
                          "test": "likelihood ratio of no shift within the family chosen by BIC, chi-square"}
        return res


class LabelledEM(_EMEstimator):
    """EM with a few labelled target samples besides the unlabelled rows: estimate(test_logits,
    labelled_counts=...) with labelled_counts[c] labelled samples of class c. design='per_class' (up to k
    per class picked by label: the unlabelled rows are what the selection left) or 'random' (drawn at random
    from the target like the rest). res.prior is the whole target's prior, res.pool_prior the unlabelled
    rows', which res.probs are adapted to."""

    target_arguments = ("labelled_counts",)

    def __init__(self, design="per_class", pseudo_count=1.0, **options):
        super().__init__(**options)
        func = self._func()
        if design not in ("per_class", "random"):
            raise ValueError(f"{func}: argument 'design' must be 'per_class' or 'random', got {design!r}")
        self.design, self.pseudo_count = design, _pseudo_count(pseudo_count, func)

    def _estimate(self, probs, fit, labelled_counts=None):
        classes = fit.source_prior.shape[0]
        if not (isinstance(labelled_counts, np.ndarray) and labelled_counts.dtype == np.int64
                and labelled_counts.shape == (classes,)):
            raise ValueError(f"{self._func()}: argument 'labelled_counts' must be an int64 array of shape "
                             f"({classes},), got {getattr(labelled_counts, 'dtype', type(labelled_counts).__name__)}"
                             f" {getattr(labelled_counts, 'shape', '')}")
        res = self._result(fit)
        res.prior, res.pool_prior, res.iterations, res.converged = _C.em_prior_labelled(
            probs, fit.reference_prior, np.ascontiguousarray(labelled_counts), self.design == "per_class",
            self.pseudo_count, self.tol, self.max_iter)
        self._warn_unconverged(res)
        self._check_confusion(res, fit)
        # the shift test runs on the unlabelled rows alone
        res.shift_test = _lr_test(self._ml_loglik(probs, fit), classes - 1, fit.noise(probs.shape[0]), _SAERENS_TEST)
        return res


class BBSE(Estimator):
    """Lipton et al. 2018, as least squares over the simplex (bbse_prior; soft: mean calibrated
    probabilities, else argmax counts; ridge > 0 shrinks towards no shift, as RLLS). Needs calibration data.
    An ill-conditioned confusion matrix (condition number > cond_limit) falls back to no shift with a
    warning (res.fell_back). Shift test: Pearson chi-square of the predicted-class counts."""

    method = "bbse"
    uncertainty = True

    def __init__(self, soft=True, ridge=0.0, bootstrap=0, level=0.95, seed=0, calibration="bcts",
                 cond_limit=COND_LIMIT):
        super().__init__(calibration, cond_limit)
        self.soft, self.ridge = bool(soft), _args.real(ridge, self._func(), "ridge", 0.0)
        _bootstrap_options(self, bootstrap, level, seed)

    def fit(self, calib_logits, calib_labels, source_prior):
        if calib_logits is None:
            raise ValueError(f"{self._func('fit')}: argument 'calib_logits' is required: BBSE needs labelled "
                             "source data")
        return super().fit(calib_logits, calib_labels, source_prior)

    def _estimate(self, probs, fit):
        res = self._result(fit)
        res.prior, res.condition_number, res.fell_back = _C.bbse_prior(
            fit.calib_probs, fit.calib_labels, probs, fit.source_prior, self.cond_limit, soft=self.soft,
            ridge=self.ridge)
        if res.fell_back:
            warnings.warn(f"{self._func()}: the BBSE confusion matrix is ill-conditioned (1-norm condition number "
                          f"{res.condition_number:.3g} > cond_limit {self.cond_limit:.3g}); falling back to no "
                          "shift (the reference prior: posteriors unchanged)", RuntimeWarning, stacklevel=4)
            res.prior = fit.reference_prior.copy()
        res.shift_test = self._shift_test(probs, fit)
        if self.bootstrap:
            _add_interval(res, _C.bbse_bootstrap(fit.calib_probs, fit.calib_labels, probs, fit.source_prior,
                                                 self.bootstrap, soft=self.soft, ridge=self.ridge, seed=self.seed),
                          self.level)
        return res

    @staticmethod
    def _shift_test(probs, fit):
        if fit.absent.size:
            # a class without held-out samples: no confusion matrix to test against (and BBSE fell back)
            return {"statistic": float("nan"), "dof": 0, "p_value": 1.0, "test": "none: the held-out set lacks a class"}
        stat, dof = _C.prediction_shift_chi2(fit.calib_probs, fit.calib_labels, probs, fit.source_prior)
        return {"statistic": stat, "dof": dof, "p_value": _C.chi2_sf(stat, dof),
                "test": "Pearson chi-square on predicted-class counts"}

    def _covariance_trace(self, probs, fit, prior):
        return _C.bbse_covariance_trace(fit.calib_probs, fit.calib_labels, probs, prior, self.soft)


class RLLS(Estimator):
    """Regularised BBSE (Azizzadenesheli et al. 2019; rlls_prior): the importance weights relative to the
    calibration label frequencies, pulled towards 1 (no shift) by a penalty scaled to the confusion matrix's
    estimation error (reg, delta). Needs calibration data. res.rho is the penalty's weight. Shift test: as
    BBSE's (Pearson chi-square of the predicted-class counts)."""

    method = "rlls"

    def __init__(self, soft=True, reg=RLLS_REG, delta=0.05, calibration="bcts"):
        super().__init__(calibration)
        func = self._func()
        self.soft, self.reg = bool(soft), _args.real(reg, func, "reg", 0.0)
        self.delta = _args.real(delta, func, "delta", 0.0, 1.0, lo_open=True)
        if self.delta == 1.0:
            raise ValueError(f"{func}: argument 'delta' must be in (0, 1), got 1.0")

    def fit(self, calib_logits, calib_labels, source_prior):
        if calib_logits is None:
            raise ValueError(f"{self._func('fit')}: argument 'calib_logits' is required: RLLS needs labelled "
                             "source data")
        return super().fit(calib_logits, calib_labels, source_prior)

    def _estimate(self, probs, fit):
        res = self._result(fit)
        res.prior, res.rho = _C.rlls_prior(fit.calib_probs, fit.calib_labels, probs, soft=self.soft, reg=self.reg,
                                           delta=self.delta)
        res.shift_test = BBSE._shift_test(probs, fit)
        return res


class _Wrapper(Estimator):
    """An estimator that changes another's estimate; fit and the calibration are the inner one's."""

    def __init__(self, estimator):
        if not isinstance(estimator, Estimator):
            raise TypeError(f"{self._func()}: argument 'estimator' must be a lade.prior_shift estimator, got "
                            f"{type(estimator).__name__}")
        self.estimator, self._fitted = estimator, None

    @property
    def method(self):
        return self.estimator.method

    @property
    def uncertainty(self):
        return self.estimator.uncertainty

    @property
    def target_arguments(self):
        return self.estimator.target_arguments

    def fit(self, calib_logits, calib_labels, source_prior):
        self._fitted = self.estimator.fit(calib_logits, calib_labels, source_prior)._fitted
        return self


def _name(estimator):
    """Gated(LabelledEM): the classes of an estimator and what it wraps."""
    inner = getattr(estimator, "estimator", None)
    return type(estimator).__name__ + (f"({_name(inner)})" if inner is not None else "")


class Gated(_Wrapper):
    """The estimate only when its shift test rejects "no shift" at `level`; otherwise res.gated is True and
    the prior is the reference prior (no shift), so on unshifted data the posteriors are left as they are in
    all but about `level` of test sets."""

    def __init__(self, estimator, level=GATE_LEVEL):
        super().__init__(estimator)
        self.level = _args.real(level, self._func(), "level", 0.0, 1.0, lo_open=True)
        if self.level == 1.0:
            raise ValueError(f"{self._func()}: argument 'level' must be in (0, 1), got 1.0")

    def _estimate(self, probs, fit, **target):
        res = self.estimator._estimate(probs, fit, **target)
        if not res.shift_test["p_value"] < self.level:
            res.prior, res.pool_prior, res.gated = fit.reference_prior.copy(), None, True
        return res

    def _covariance_trace(self, probs, fit, prior):
        return self.estimator._covariance_trace(probs, fit, prior)


class Shrunk(_Wrapper):
    """The estimate p_hat moved towards an anchor t ('no_shift': the reference prior; 'uniform') by
    w = min(1, tr Cov(p_hat) / |p_hat - t|^2), the James-Stein / Ledoit-Wolf plug-in weight. tr Cov is the
    bootstrap width when the estimator bootstraps, else its analytic width (EM: inverse Fisher information;
    BBSE: the delta method), so only estimators with an uncertainty model can be shrunk. A gated estimate
    (no shift) is left as it is. res.shrink_weight, res.covariance_trace, res.unshrunk_prior."""

    def __init__(self, estimator, to="no_shift"):
        super().__init__(estimator)
        if not estimator.uncertainty:
            raise ValueError(f"{self._func()}: argument 'estimator' must have an uncertainty model (EM, "
                             f"EmpiricalBayesEM or BBSE, gated or not), got {_name(estimator)}")
        if to not in ("no_shift", "uniform"):
            raise ValueError(f"{self._func()}: argument 'to' must be 'no_shift' or 'uniform', got {to!r}")
        self.to = to

    def _estimate(self, probs, fit):
        res = self.estimator._estimate(probs, fit)
        if res.gated:
            return res
        classes = fit.source_prior.shape[0]
        anchor = fit.reference_prior if self.to == "no_shift" else np.full(classes, 1.0 / classes, np.float32)
        if res.replicates is not None:  # the bootstrap width: it sees the simplex boundary and the smoothing
            res.covariance_trace = _C.replicate_variance(res.replicates)
        else:
            res.covariance_trace = self.estimator._covariance_trace(probs, fit, res.prior)
        res.unshrunk_prior = res.prior
        res.prior, res.shrink_weight = _C.shrink_prior(res.prior, anchor, res.covariance_trace)
        return res


# ---- the one-call form ------------------------------------------------------------------------------------

_FAMILIES = {"free": EM, "tilt": TiltedEM, "auto": AutoFamilyEM, "select": SelectEM}
# adapt's keywords under the names of the estimators' constructors
_RENAMED = {"labelled_design": "design"}


def estimator(method="em", family=None, pseudo_count=None, gate=GATE_LEVEL, shrink_to=None, labelled=False,
              **options):
    """The estimator object that adapt() runs with the same keywords (the recommended default with none):
    method 'em' or 'bbse'; family 'free', 'tilt', 'auto' or 'select' (EM; BBSE is free), None the recommended
    'auto' for EM;
    pseudo_count a number, 'auto' for free EM (EmpiricalBayesEM), or None for the estimator's own (EM and
    LabelledEM 1, AutoFamilyEM AUTO_PSEUDO_COUNT); labelled=True: free EM with labelled
    target counts (LabelledEM); gate a level (Gated) or None; shrink_to 'no_shift' or 'uniform' (Shrunk) or
    None. `options` go to the estimator's constructor; one it does not take is refused with the list of
    those it does."""
    func = _PREFIX + "estimator"
    if method not in ("em", "bbse"):
        raise ValueError(f"{func}: argument 'method' must be 'em' or 'bbse', got {method!r}")
    if family is not None and family not in _FAMILIES:
        raise ValueError(f"{func}: argument 'family' must be 'free', 'tilt', 'auto' or 'select', got {family!r}")
    if gate is not None and not (isinstance(gate, numbers.Real) and not isinstance(gate, bool) and 0 < gate < 1):
        raise ValueError(f"{func}: argument 'gate' must be None or a level in (0, 1), got {gate!r}")
    if shrink_to not in (None, "no_shift", "uniform"):
        raise ValueError(f"{func}: argument 'shrink_to' must be None, 'no_shift' or 'uniform', got {shrink_to!r}")
    if method == "bbse":
        cls, chosen = BBSE, "method='bbse'"
        if family not in (None, "free"):  # BBSE's estimate is free: any prior on the simplex
            options["family"] = family
    else:
        family = "auto" if family is None else family
        cls, chosen = _FAMILIES[family], f"family={family!r}"
        if family == "free" and labelled:
            cls, chosen = LabelledEM, "family='free' with labelled_counts"
        elif family == "free" and pseudo_count == "auto":
            cls, chosen = EmpiricalBayesEM, "family='free', pseudo_count='auto'"
    if labelled and cls is not LabelledEM:
        options["labelled_counts"] = True
    if pseudo_count is not None and cls is not EmpiricalBayesEM:
        options["pseudo_count"] = pseudo_count
    if cls is AutoFamilyEM:  # the family test's level is the gate's
        options["level"] = GATE_LEVEL if gate is None else gate
    options = {_RENAMED.get(k, k): v for k, v in options.items()}
    takes = _constructor_arguments(cls)
    for k in options:
        if k not in takes:
            raise ValueError(f"{func}: argument {_RENAMED_BACK.get(k, k)!r} does not apply to {cls.__name__} "
                             f"({chosen}); it takes {', '.join(sorted(_RENAMED_BACK.get(a, a) for a in takes))}")
    est = cls(**options)
    if gate is not None:
        est = Gated(est, gate)
    if shrink_to is not None:
        if not est.uncertainty:
            raise ValueError(f"{func}: argument 'shrink_to' needs an estimator with an uncertainty model (EM, "
                             f"EmpiricalBayesEM or BBSE), got {cls.__name__} ({chosen})")
        est = Shrunk(est, shrink_to)
    return est


_RENAMED_BACK = {v: k for k, v in _RENAMED.items()}


def _constructor_arguments(cls):
    """The keywords cls's constructor takes, its bases' included (through **options)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(p.name for p in inspect.signature(klass.__init__).parameters.values()
                         if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self")
    return names


def adapt(test_logits, source_prior, calib_logits=None, calib_labels=None, method="em", calibration="bcts",
          bootstrap=0, level=0.95, seed=0, tol=1e-8, max_iter=2000, pseudo_count=None, soft=True, ridge=0.0,
          cond_limit=COND_LIMIT, gate=GATE_LEVEL, shrink_to=None, labelled_counts=None, labelled_design="per_class",
          family=None, tilt_prior=None):
    """Estimates the target prior of unlabelled `test_logits` and adapts the posteriors to it, in one call:
    estimator(...) with these keywords, fitted on (calib_logits, calib_labels, source_prior), then its
    adapt(test_logits). With no keyword this is the recommended default: EM in the tilted family or free by
    the likelihood-ratio test, or sparse when cross-validation supports it, gated at GATE_LEVEL. A keyword
    is passed on only when it differs from its default here, so one that does not apply to the chosen
    estimator is refused by that estimator's constructor. See the module docstring."""
    given = {k: v for k, v in (("calibration", calibration), ("bootstrap", bootstrap), ("level", level),
                               ("seed", seed), ("tol", tol), ("max_iter", max_iter), ("soft", soft), ("ridge", ridge),
                               ("cond_limit", cond_limit), ("labelled_design", labelled_design),
                               ("tilt_prior", tilt_prior))
             if not _is_default(v, _ADAPT_DEFAULTS[k])}
    if "level" in given and method == "em" and family in (None, "auto"):
        given.pop("level")  # the interval's level: AutoFamilyEM has no bootstrap; its test level is the gate's
    try:
        est = estimator(method, family, pseudo_count, gate, shrink_to, labelled_counts is not None, **given)
        est.fit(calib_logits, calib_labels, source_prior)
        target = {} if labelled_counts is None else {"labelled_counts": labelled_counts}
        return est.adapt(test_logits, **target)
    except (ValueError, TypeError, FloatingPointError, RuntimeError) as e:
        raise _renamed(e, _FUNC, _RENAMED_BACK) from None


def _is_default(value, default):
    if default is None or value is None:
        return value is default
    return type(value) is type(default) and value == default


_ADAPT_DEFAULTS = {k: p.default for k, p in inspect.signature(adapt).parameters.items()}


def shifted_test_indices(test_labels, train_prior, ratio, direction, img_max=None):
    """Re-export of lade.sampling.shifted_test_indices (spec §2.3)."""
    from lade.sampling import shifted_test_indices as _impl
    return _impl(test_labels, train_prior, ratio, direction, img_max)


# ---- multi-label ------------------------------------------------------------------------------------------

_ADAPT_MULTILABEL = "lade.prior_shift.adapt_multilabel"


@dataclass
class MultilabelShiftResult:
    marginals: np.ndarray          # estimated target marginals (C,), float32, each in [1e-7, 1 - 1e-7]
    probs: np.ndarray              # the test probabilities corrected to them (n, C): pc_sigmoid
    logits: np.ndarray             # the corrected logits (n, C): pc_adjust_multilabel, for metrics from logits
    reference_marginals: np.ndarray  # the marginals the uncorrected sigmoid outputs embody (source_marginals)
    iterations: np.ndarray         # EM maps per label, int32 (C,)
    converged: np.ndarray          # per label, bool (C,)
    loglik: np.ndarray             # per label, float64 (C,): log-likelihood ratio of the estimate against no shift


def adapt_multilabel(test_logits, source_marginals, pseudo_count=1.0, tol=1e-8, max_iter=2000):
    """Estimates the target marginals of unlabelled multi-label test_logits (n, C) (sigmoid outputs of a model
    trained with marginals source_marginals (C,), each in (0, 1)) by per-label EM (em_marginals on
    sigmoid(test_logits)) and corrects the outputs to them, in one call; the multi-label counterpart of adapt.
    pseudo_count=1 (the default, as the EM estimator's) is the MAP under Beta(2, 2): a label's estimate is not driven to
    0 or 1 by a few confident rows; 0 is maximum likelihood. The sigmoid of test_logits must be calibrated
    (no calibration is fitted here). Warns (RuntimeWarning) when a label's EM has not converged.
    Returns a MultilabelShiftResult."""
    func = _ADAPT_MULTILABEL
    source = as_float32(source_marginals, "source_marginals", func)
    _C.check_multilabel_adapt(source, test_logits)
    try:
        probs = posthoc.sigmoid(test_logits)
        marginals, iterations, converged, loglik = em_marginals(probs, source, pseudo_count, tol, max_iter)
    except (ValueError, TypeError, FloatingPointError) as e:
        raise _renamed(e, func) from None
    if not converged.all():
        labels = np.flatnonzero(~converged)
        warnings.warn(f"{func}: EM did not converge in {max_iter} iterations (tol {tol:g}) for label(s) "
                      f"{', '.join(map(str, labels[:5]))}{' ...' if labels.size > 5 else ''}", RuntimeWarning,
                      stacklevel=2)
    logits = posthoc.pc_adjust_multilabel(test_logits, source, marginals)
    return MultilabelShiftResult(marginals=marginals, probs=posthoc.sigmoid(logits), logits=logits,
                                 reference_marginals=source, iterations=iterations, converged=converged,
                                 loglik=loglik)
