"""Estimating an unknown target prior from unlabelled predictions, and adapting to it
(C core: csrc/ltmath/prior_shift.c). The paper assumes p_t known; this fills that gap.

One call::

    res = lade.prior_shift.adapt(test_logits, source_prior,
                                 calib_logits=val_logits, calib_labels=val_labels, method="em")
    res.prior        # estimated target prior (C,)
    res.probs        # test posteriors adapted to it (n, C)
    res.shift_test   # {'statistic', 'dof', 'p_value', 'test'}: is there a shift at all?

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

Family (``family``, EM only): 'free' (default) estimates any prior on the simplex (C - 1
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
tests are r * p_s^g), so its gain there is the best case; off the family (Dirichlet-drawn priors)
'auto' falls back to the free estimate (see the estimated-prior tables in docs/label-shift.md). A constant
tilt_prior (balanced training) makes the family the reference prior alone.

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

Reference prior: the prior the (calibrated) posteriors embody. With calibration data it is the
mean calibrated posterior over the calibration rows (Alexandari et al. 2020), so that EM's fixed
point without shift is exactly "no shift" even when the posteriors are not calibrated
(calibration='ts' or 'none'); with calibration='bcts' this equals the calibration label
frequencies (every class must appear in calib_labels). Without calibration data it is
source_prior.
"""
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from lade import _C, _args, posthoc
from lade.priors import as_float32, prior_from_labels

__all__ = ["adapt", "PriorShiftResult", "GATE_LEVEL", "em_prior", "em_prior_eb", "tilted_prior", "select_prior",
           "bbse_prior", "mean_posterior", "reweight", "shifted_test_indices"]

_FUNC = "lade.prior_shift.adapt"
_REWEIGHT, _TILTED = "lade.prior_shift.reweight", "lade.prior_shift.tilted_prior"
COND_LIMIT = 1e4
GATE_LEVEL = 0.05  # the default significance level of adapt's gate
_TILT_MAX_ITER = 200  # Newton steps of tilted_prior (it converges in under 20 on real models)


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
    family: str = "free"         # the family of the estimate: 'free' or 'tilt' (family='auto' picks one)
    tilt_exponent: float = float("nan")  # g of the tilted family's estimate (family 'tilt' or 'auto')
    family_test: dict = field(default_factory=dict)  # family='auto': the test of the tilted family in the free one
    support: int = None          # family='select': the number of classes the chosen estimate keeps
    smoothing_strength: float = float("nan")  # pseudo_count='auto': the Dirichlet strength A chosen from the data


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


def adapt(test_logits, source_prior, calib_logits=None, calib_labels=None, method="em", calibration="bcts",
          bootstrap=0, level=0.95, seed=0, tol=1e-8, max_iter=2000, pseudo_count=1.0, soft=True, ridge=0.0,
          cond_limit=COND_LIMIT, gate=GATE_LEVEL, shrink_to=None, labelled_counts=None, labelled_design="per_class",
          family="free", tilt_prior=None):
    """Estimates the target prior of unlabelled `test_logits` and adapts the posteriors to it.
    See the module docstring. bootstrap > 0 adds a per-class percentile interval at `level`
    (replicates resample the test rows, and for BBSE the calibration rows; seeded).
    gate: significance level of the shift test below which the estimate is used (default
    GATE_LEVEL = 0.05); otherwise the prior of no shift is kept (res.gated). None: always adapt.
    shrink_to: None, 'no_shift' or 'uniform': shrink the estimate towards that prior by its
    uncertainty (res.shrink_weight). labelled_counts (C,) int64 with labelled_design 'per_class'
    or 'random': EM with that many labelled target samples per class besides `test_logits`.
    family: 'free', 'tilt', 'auto' or 'select' (EM only; the module docstring), tilt_prior the family's
    direction (default source_prior). pseudo_count='auto': a Dirichlet strength chosen from the data."""
    if method not in ("em", "bbse"):
        raise ValueError(f"{_FUNC}: argument 'method' must be 'em' or 'bbse', got {method!r}")
    if calibration not in ("bcts", "ts", "none"):
        raise ValueError(f"{_FUNC}: argument 'calibration' must be 'bcts', 'ts' or 'none', got {calibration!r}")
    if method == "bbse" and calib_logits is None:
        raise ValueError(f"{_FUNC}: argument 'calib_logits' is required for method='bbse' (labelled source data)")
    if pseudo_count != "auto":
        pseudo_count = _args.real(pseudo_count, _FUNC, "pseudo_count", 0.0)
    ridge = _args.real(ridge, _FUNC, "ridge", 0.0)
    tol, cond_limit, level = (_args.real(v, _FUNC, k) for k, v in (("tol", tol), ("cond_limit", cond_limit),
                                                                     ("level", level)))
    max_iter = _args.whole(max_iter, _FUNC, "max_iter", 1)
    bootstrap = _args.whole(bootstrap, _FUNC, "bootstrap", 0, 10 ** 6)
    seed = _args.whole(seed, _FUNC, "seed", 0, 2 ** 64 - 1)
    if gate is not None and not (isinstance(gate, numbers.Real) and not isinstance(gate, bool) and 0 < gate < 1):
        raise ValueError(f"{_FUNC}: argument 'gate' must be None or a level in (0, 1), got {gate!r}")
    if shrink_to not in (None, "no_shift", "uniform"):
        raise ValueError(f"{_FUNC}: argument 'shrink_to' must be None, 'no_shift' or 'uniform', got {shrink_to!r}")
    if labelled_design not in ("per_class", "random"):
        raise ValueError(f"{_FUNC}: argument 'labelled_design' must be 'per_class' or 'random', got "
                         f"{labelled_design!r}")
    if family not in ("free", "tilt", "auto", "select"):
        raise ValueError(f"{_FUNC}: argument 'family' must be 'free', 'tilt', 'auto' or 'select', got {family!r}")
    if pseudo_count == "auto" and (labelled_counts is not None or bootstrap or family != "free" or method != "em"):
        raise ValueError(f"{_FUNC}: argument 'pseudo_count'='auto' is a free EM estimate of its own; it cannot be "
                         "combined with method='bbse', labelled_counts, bootstrap or a family")
    if family != "free":
        clash = [k for k, v in (("method='bbse'", method == "bbse"), ("labelled_counts", labelled_counts is not None),
                                ("shrink_to", shrink_to is not None), ("bootstrap", bootstrap)) if v]
        if clash:
            raise ValueError(f"{_FUNC}: argument 'family'={family!r} is an EM estimate without shrinkage, few labels "
                             f"or bootstrap; it cannot be combined with {', '.join(clash)}")
    source = as_float32(source_prior, "source_prior", _FUNC)
    classes = source.shape[0]
    tilt = source if tilt_prior is None else as_float32(tilt_prior, "tilt_prior", _FUNC)
    if tilt.shape != source.shape:
        raise ValueError(f"{_FUNC}: argument 'tilt_prior' must have shape ({classes},) like source_prior, got "
                         f"{tilt.shape}")
    if labelled_counts is not None:
        if method != "em":
            raise ValueError(f"{_FUNC}: argument 'labelled_counts' needs method='em', got method={method!r}")
        if shrink_to is not None or bootstrap:
            raise ValueError(f"{_FUNC}: argument 'labelled_counts' cannot be combined with 'shrink_to' or "
                             "'bootstrap' (the uncertainty of the few-label estimate is not modelled)")
        if not (isinstance(labelled_counts, np.ndarray) and labelled_counts.dtype == np.int64
                and labelled_counts.shape == (classes,)):
            raise ValueError(f"{_FUNC}: argument 'labelled_counts' must be an int64 array of shape ({classes},), "
                             f"got {getattr(labelled_counts, 'dtype', type(labelled_counts).__name__)} "
                             f"{getattr(labelled_counts, 'shape', '')}")
    _C.check_adapt(source, test_logits, calib_logits, calib_labels)
    cal = None
    if calib_logits is not None and calibration != "none":
        if calibration == "bcts":
            try:
                prior_from_labels(calib_labels, classes)
            except ValueError as e:
                raise ValueError(f"{_FUNC}: argument 'calib_labels' must contain every class for "
                                 f"bias-corrected calibration ({e})") from None
        cal = posthoc.fit_temperature(calib_logits, calib_labels, bias=calibration == "bcts")
    test_probs = cal(test_logits) if cal else posthoc.softmax(test_logits)
    calib_probs, reference = None, source
    if calib_logits is not None:
        calib_probs = cal(calib_logits) if cal else posthoc.softmax(calib_logits)
        reference = mean_posterior(calib_probs)

    res = PriorShiftResult(prior=None, probs=None, method=method, reference_prior=reference, calibration=cal)
    # the reference prior is itself estimated from the m calibration rows: dividing the likelihood-ratio
    # statistics by 1 + n / m bounds their inflation by that noise (the mean posterior varies no more
    # than label frequencies would), so the tests stay at or below their level
    noise = 1.0 + test_probs.shape[0] / calib_probs.shape[0] if calib_probs is not None else 1.0
    pool = None  # the prior of the unlabelled rows, when it differs from the target's (few labels)
    if method == "em":
        if labelled_counts is not None:
            prior, pool, res.iterations, res.converged = _C.em_prior_labelled(
                test_probs, reference, np.ascontiguousarray(labelled_counts), labelled_design == "per_class",
                pseudo_count, tol, max_iter)
            loglik = None  # the shift test below runs on the unlabelled rows alone
        elif family == "select":
            prior, res.family, res.support, loglik, _ = select_prior(test_probs, reference, tilt, noise=noise, tol=tol,
                                                                     max_iter=max_iter)
        elif pseudo_count == "auto":
            prior, res.smoothing_strength, res.iterations, res.converged, loglik = _C.em_prior_eb(
                test_probs, reference, tol=tol, max_iter=max_iter)
        else:
            prior, res.iterations, res.converged, loglik = _C.em_prior(test_probs, reference, pseudo_count=pseudo_count,
                                                                       tol=tol, max_iter=max_iter, accelerate=True)
        if not res.converged:
            warnings.warn(f"{_FUNC}: EM did not converge in {max_iter} iterations (tol {tol:g})", RuntimeWarning,
                          stacklevel=2)
        if calib_probs is not None:
            res.condition_number = _C.confusion_condition(calib_probs, calib_labels, soft)
            absent = np.flatnonzero(np.bincount(calib_labels, minlength=classes) == 0)
            if absent.size:
                warnings.warn(f"{_FUNC}: the held-out set has no sample of class(es) "
                              f"{', '.join(map(str, absent[:5]))}{' ...' if absent.size > 5 else ''}, so the "
                              "confusion matrix is singular and the EM estimate cannot be checked against it",
                              RuntimeWarning, stacklevel=2)
            elif not res.condition_number <= cond_limit:
                warnings.warn(f"{_FUNC}: the calibration confusion matrix is ill-conditioned (1-norm condition "
                              f"number {res.condition_number:.3g} > cond_limit {cond_limit:.3g}): the classifier "
                              "barely separates some classes, so the EM estimate is unreliable", RuntimeWarning,
                              stacklevel=2)
        if family == "select":  # the likelihood ratio of no shift within the chosen family, its parameters the dof
            dof = {"none": 0, "tilt": 1, "sparse": res.support - 1, "free": classes - 1}[res.family]
            stat = max(2.0 * loglik, 0.0) / noise
            # (a support of one class has no free parameter: its test counts one, like the tilt's)
            res.shift_test = {"statistic": stat, "dof": dof,
                              "p_value": 1.0 if res.family == "none" else _C.chi2_sf(stat, max(dof, 1)),
                              "test": "likelihood ratio of no shift within the family chosen by BIC, chi-square"}
        elif pseudo_count != 0 or loglik is None:  # the likelihood-ratio test needs the maximum-likelihood estimate
            loglik = _C.em_prior(test_probs, reference, pseudo_count=0.0, tol=tol, max_iter=max_iter,
                                 accelerate=True)[3]
        if family != "select":
            stat, dof = max(2.0 * loglik, 0.0) / noise, classes - 1
            res.shift_test = {"statistic": stat, "dof": dof, "p_value": _C.chi2_sf(stat, max(dof, 1)),
                              "test": "likelihood ratio (Saerens 2002), chi-square"}
        if family in ("tilt", "auto"):
            tilted, res.tilt_exponent, tilt_loglik, tilt_iterations, tilt_converged = tilted_prior(
                test_probs, reference, tilt)
            if not tilt_converged:
                warnings.warn(f"{_FUNC}: the tilted family's fit did not converge in {_TILT_MAX_ITER} iterations",
                              RuntimeWarning, stacklevel=2)
            if family == "auto":
                fstat, fdof = max(2.0 * (loglik - tilt_loglik), 0.0) / noise, max(classes - 2, 1)
                res.family_test = {"statistic": fstat, "dof": fdof, "p_value": _C.chi2_sf(fstat, fdof),
                                   "test": "likelihood ratio of the tilted family within the free one, chi-square"}
            if family == "tilt" or not res.family_test["p_value"] < (GATE_LEVEL if gate is None else gate):
                prior, res.family, res.iterations, res.converged = tilted, "tilt", tilt_iterations, tilt_converged
                stat = max(2.0 * tilt_loglik, 0.0) / noise
                res.shift_test = {"statistic": stat, "dof": 1, "p_value": _C.chi2_sf(stat, 1),
                                  "test": "likelihood ratio of no shift within the tilted family, chi-square"}
    else:
        prior, res.condition_number, res.fell_back = _C.bbse_prior(calib_probs, calib_labels, test_probs, source,
                                                                   cond_limit, soft=soft, ridge=ridge)
        if res.fell_back:
            warnings.warn(f"{_FUNC}: the BBSE confusion matrix is ill-conditioned (1-norm condition number "
                          f"{res.condition_number:.3g} > cond_limit {cond_limit:.3g}); falling back to no shift "
                          "(the reference prior: posteriors unchanged)", RuntimeWarning, stacklevel=2)
            prior = reference.copy()
        stat, dof = _C.prediction_shift_chi2(calib_probs, calib_labels, test_probs, source)
        res.shift_test = {"statistic": stat, "dof": dof, "p_value": _C.chi2_sf(stat, dof),
                          "test": "Pearson chi-square on predicted-class counts"}
    if bootstrap:
        if method == "em":
            reps = _C.em_bootstrap(test_probs, reference, bootstrap, pseudo_count=pseudo_count, tol=tol,
                                   max_iter=max_iter, seed=seed)
        else:
            reps = _C.bbse_bootstrap(calib_probs, calib_labels, test_probs, source, bootstrap, soft=soft, ridge=ridge,
                                     seed=seed)
        lo, hi = _C.bootstrap_interval(reps, level)
        res.interval, res.level, res.replicates = (lo, hi), float(level), reps

    if gate is not None and not res.shift_test["p_value"] < gate:
        prior, pool, res.gated = reference.copy(), None, True
    elif shrink_to is not None:
        anchor = reference if shrink_to == "no_shift" else np.full(classes, 1.0 / classes, np.float32)
        if bootstrap:  # the bootstrap width: it sees the simplex boundary and the smoothing
            res.covariance_trace = _C.replicate_variance(res.replicates)
        elif method == "em":
            res.covariance_trace = _C.em_covariance_trace(test_probs, reference, prior)
        else:
            res.covariance_trace = _C.bbse_covariance_trace(calib_probs, calib_labels, test_probs, prior, soft)
        res.unshrunk_prior = prior
        prior, res.shrink_weight = _C.shrink_prior(prior, anchor, res.covariance_trace)
    res.prior, res.pool_prior = prior, prior if pool is None else pool
    res.probs = reweight(test_probs, reference, res.pool_prior)
    return res


def shifted_test_indices(test_labels, train_prior, ratio, direction, img_max=None):
    """Re-export of lade.sampling.shifted_test_indices (spec §2.3)."""
    from lade.sampling import shifted_test_indices as _impl
    return _impl(test_labels, train_prior, ratio, direction, img_max)
