"""Class priors and long-tailed profiles (C core: csrc/priors.c).

A prior is a float32 vector of positive entries summing to 1 (within 1e-3). A class
without training samples has no finite log prior: `prior_from_counts` refuses it unless
you pass ``eps`` (a floor in units of samples, documented and explicit).
"""
import numpy as np

from lade import _C, _args

__all__ = ["cifar_lt_counts", "lt_profile", "class_counts", "prior_from_counts", "prior_from_labels",
           "check_prior", "as_prior"]

_PROFILES = {"exp": 0, "step": 1}


def as_prior(prior, func, arg="prior"):
    """Returns `prior` as a validated float32 vector (a small copy when it is not one already)."""
    try:
        p = np.ascontiguousarray(prior, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{func}: argument '{arg}' must be a vector of probabilities ({e})") from None
    if p.ndim != 1:
        raise ValueError(f"{func}: argument '{arg}' must be 1-dimensional, got shape {p.shape}")
    _C.lt_check_prior(func, p, arg)
    return p


def check_prior(prior, arg="prior"):
    """Raises ValueError/FloatingPointError unless `prior` is a valid prior."""
    as_prior(prior, "lade.priors.check_prior", arg)


def lt_profile(classes, img_max, ratio, profile="exp"):
    """Per-class counts of a long-tailed profile, int64 (classes,) (spec §3.1).

    exp: n_c = int(img_max * ratio**(c / (classes - 1))); step: the first classes // 2
    get int(img_max), the rest int(img_max * ratio). ratio is the tail/head fraction
    (0.01 for "imbalance 100")."""
    func = "lade.priors.lt_profile"
    if profile not in _PROFILES:
        raise ValueError(f"{func}: argument 'profile' must be 'exp' or 'step', got {profile!r}")
    out = _args.empty(_args.whole(classes, func, "classes", 1), np.int64, func)
    _C.lt_profile(func, out, _args.real(img_max, func, "img_max"), _args.real(ratio, func, "ratio"), _PROFILES[profile])
    return out


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
    out = _args.empty(_args.whole(classes, "lade.priors.class_counts", "classes", 1), np.int64,
                      "lade.priors.class_counts")
    _C.lt_class_counts("lade.priors.class_counts", labels, out)
    return out


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
    func = "lade.priors.prior_from_counts"
    counts = _integer_counts(counts, func)
    out = np.empty(counts.shape[0] if counts.ndim == 1 else 0, np.float32)
    _C.lt_prior_from_counts(func, counts, out, _args.real(eps, func, "eps", 0.0))
    return out


def prior_from_labels(labels, classes, eps=0.0):
    """The label frequencies of `labels` as a prior (see prior_from_counts for eps)."""
    func = "lade.priors.prior_from_labels"
    classes = _args.whole(classes, func, "classes", 1)
    counts = _args.empty(classes, np.int64, func)
    _C.lt_class_counts(func, labels, counts)
    out = np.empty(classes, np.float32)
    _C.lt_prior_from_counts(func, counts, out, _args.real(eps, func, "eps", 0.0))
    return out
