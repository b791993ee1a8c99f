"""Class priors and long-tailed profiles (C core: csrc/ltmath/priors.c).

A prior is a float32 vector of positive entries summing to 1 (within 1e-3). A class
without training samples has no finite log prior: `prior_from_counts` refuses it unless
you pass ``eps`` (a floor in units of samples, documented and explicit).

Multi-label data (an (n, C) 0/1 indicator matrix, independent sigmoid outputs) has per-label marginals
P(y_j = 1) instead, each in the open interval (0, 1) and not summing to 1: `label_marginals` counts them;
a label that is never or always positive has an infinite logit and is refused unless you pass
``pseudo_count`` (add-a smoothing, (count + a) / (n + 2a)).
"""
import numpy as np

from lade import _C

__all__ = ["cifar_lt_counts", "lt_profile", "class_counts", "prior_from_counts", "prior_from_labels",
           "check_prior", "as_prior", "as_float32", "label_marginals"]

_PROFILES = {"exp": 0, "step": 1}


def as_float32(prior, arg="prior", func="lade.priors.as_float32"):
    """`prior` as a float32 vector, converted (a small copy) when it is not one already; C checks it.
    Errors name `func`, the public function the user called."""
    try:
        return np.ascontiguousarray(prior, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{func}: argument '{arg}' must be a vector of probabilities ({e})") from None


def as_prior(prior, arg="prior", func="lade.priors.as_prior"):
    """Returns `prior` as a validated float32 vector (a small copy when it is not one already); errors name
    `func`, the public function the user called."""
    p = as_float32(prior, arg, func)
    try:
        _C.check_prior(p, arg)
    except (ValueError, FloatingPointError) as e:  # C names its own binding; the user called func
        raise type(e)(str(e).replace("lade.priors.check_prior", func, 1)) from None
    return p


def check_prior(prior, arg="prior"):
    """Raises ValueError/FloatingPointError unless `prior` is a valid prior."""
    as_prior(prior, arg, "lade.priors.check_prior")


def lt_profile(classes, img_max, ratio, profile="exp"):
    """Per-class counts of a long-tailed profile, int64 (classes,) (spec §3.1).

    exp: n_c = int(img_max * ratio**(c / (classes - 1))); step: the first classes // 2
    get int(img_max), the rest int(img_max * ratio). ratio is the tail/head fraction
    (0.01 for "imbalance 100")."""
    if profile not in _PROFILES:
        raise ValueError(f"lade.priors.lt_profile: argument 'profile' must be 'exp' or 'step', got {profile!r}")
    return _C.lt_profile(classes, img_max, ratio, _PROFILES[profile])


def cifar_lt_counts(classes=100, imbalance=100, split="train", profile="exp"):
    """CIFAR-LT counts: img_max = 50000/classes (train) or 10000/classes (test), ratio = 1/imbalance."""
    func = "lade.priors.cifar_lt_counts"
    if split not in ("train", "test"):
        raise ValueError(f"{func}: argument 'split' must be 'train' or 'test', got {split!r}")
    if not imbalance >= 1:
        raise ValueError(f"{func}: argument 'imbalance' must be >= 1, got {imbalance}")
    img_max = (50000.0 if split == "train" else 10000.0) / classes
    return lt_profile(classes, img_max, 1.0 / imbalance, profile)


def class_counts(labels, classes):
    """counts[c] = number of labels equal to c (labels int64, all in [0, classes))."""
    return _C.class_counts(labels, classes)


def _integer_counts(counts, func):
    """counts as a contiguous int64 array; a non-integer value (2.5, NaN) raises instead of being truncated."""
    try:
        a = np.asarray(counts)
    except Exception as e:
        raise TypeError(f"{func}: argument 'counts' must be an array of whole numbers ({e})") from None
    if a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > 2.0 ** 62)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(f"{func}: argument 'counts' must hold whole numbers, got {a.ravel()[i]} at index {i}")
    elif a.dtype.kind not in "iu":
        raise TypeError(f"{func}: argument 'counts' must be an array of whole numbers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and a.max() > 2 ** 62:
        raise ValueError(f"{func}: argument 'counts' holds {a.max()}, more than 2^62")
    return np.ascontiguousarray(a, dtype=np.int64)


def prior_from_counts(counts, eps=0.0):
    """prior[c] = max(counts[c], eps) / sum_k max(counts[k], eps), float32.

    eps = 0 (default): a zero count raises ValueError naming the class.
    eps > 0: empty classes count as eps samples (e.g. eps=1e-3)."""
    return _C.prior_from_counts(_integer_counts(counts, "lade.priors.prior_from_counts"), eps)


def prior_from_labels(labels, classes, eps=0.0):
    """The label frequencies of `labels` as a prior (see prior_from_counts for eps)."""
    return _C.prior_from_labels(labels, classes, eps)


def label_marginals(targets, pseudo_count=0.0):
    """Per-label marginals of a multi-label indicator matrix targets (n, C), uint8 0/1 or bool:
    m[j] = (count_j + pseudo_count) / (n + 2 pseudo_count), float32 (C,).

    pseudo_count = 0 (default): a label that is never or always positive raises ValueError naming it
    (its marginal would be 0 or 1 and its logit infinite). pseudo_count > 0 smooths every label
    (e.g. 0.5, Jeffreys; 1, Laplace)."""
    if isinstance(targets, np.ndarray) and targets.dtype == np.bool_:
        targets = targets.view(np.uint8)
    return _C.label_marginals(targets, pseudo_count)
