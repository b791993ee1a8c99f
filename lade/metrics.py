"""Evaluation metrics (C core: csrc/metrics.c).

Scores / probabilities are float32 (n, C) C-contiguous, labels int64 (n,).
Top-k ranks ties by lower class index (k = 1 is numpy.argmax). Many / medium / few group
classes by TRAINING count: > 100 / 20..100 / < 20 (spec §2.2), over classes present in the
evaluated labels. ECE is top-label with equal-width bins: variant 'standard' (default,
15 bins, (lo, hi] as Guo et al. 2017) or 'spec20' (spec §2.4 exactly: 20 bins, [lo, hi),
an extra bin for confidence 1.0, eps 2.2e-16 on counts).
"""
import numpy as np

from lade import _C, _args

__all__ = ["accuracy", "topk_accuracy", "predictions", "confusion_matrix", "per_class_accuracy", "shot_accuracy",
           "ece", "reliability_diagram", "nll", "brier", "summary"]

_VARIANTS = {"standard": 0, "spec20": 1}


def topk_accuracy(scores, labels, k=1, return_correct=False):
    """Fraction of samples whose label is among the top k scores; optionally the per-sample mask."""
    func = "lade.metrics.topk_accuracy"
    correct = np.empty(len(labels), np.uint8) if return_correct and isinstance(labels, np.ndarray) else None
    acc = _C.lt_topk_accuracy(func, scores, labels, _args.whole(k, func, "k", 1), correct)
    return (acc, correct.astype(bool)) if return_correct else acc


def accuracy(scores, labels):
    """Top-1 accuracy (argmax == label)."""
    return _C.lt_topk_accuracy("lade.metrics.accuracy", scores, labels, 1, None)


def predictions(scores):
    """Row-wise first argmax, int64 (n,)."""
    out = np.empty(scores.shape[0] if isinstance(scores, np.ndarray) and scores.ndim == 2 else 0, np.int64)
    _C.lt_argmax("lade.metrics.predictions", scores, out)
    return out


def confusion_matrix(predicted, labels, classes):
    """int64 (C, C) counts, row = true label, column = prediction. `predicted` is an int64
    vector of predictions or a float32 (n, C) score matrix (argmax taken)."""
    func = "lade.metrics.confusion_matrix"
    if isinstance(predicted, np.ndarray) and predicted.ndim == 2:
        predicted = predictions(predicted)
    classes = _args.whole(classes, func, "classes", 1)
    out = _args.empty((classes, classes), np.int64, func)
    _C.lt_confusion_matrix(func, predicted, labels, out)
    return out


def per_class_accuracy(confusion):
    """Per-class recall from a confusion matrix, float64; NaN for classes with no sample."""
    out = np.empty(confusion.shape[0] if isinstance(confusion, np.ndarray) else 0, np.float64)
    _C.lt_per_class_accuracy("lade.metrics.per_class_accuracy", confusion, out)
    return out


def shot_accuracy(per_class_acc, train_counts, many_above=100, few_below=20):
    """{'many', 'medium', 'few'}: mean per-class accuracy of classes with train count
    > many_above, in [few_below, many_above], < few_below (NaN for an empty group)."""
    acc = np.ascontiguousarray(per_class_acc, dtype=np.float64)
    counts = np.ascontiguousarray(train_counts, dtype=np.int64)
    func = "lade.metrics.shot_accuracy"
    many, medium, few = _C.lt_shot_accuracy(func, acc, counts, _args.whole(many_above, func, "many_above", None, 2**62),
                                            _args.whole(few_below, func, "few_below", None, 2**62))
    return {"many": many, "medium": medium, "few": few}


def reliability_diagram(probs, labels, n_bins=None, variant="standard"):
    """Per-bin data for a reliability diagram: dict with 'confidence' (mean top prob),
    'accuracy', 'count' (n_bins + 1 entries; the last is the spec20 bin for confidence 1.0,
    always empty for 'standard'), 'edges' (n_bins + 1 edges from 0 to 1) and 'ece'.
    n_bins defaults to 15 ('standard') or 20 ('spec20')."""
    func = "lade.metrics.reliability_diagram"
    if variant not in _VARIANTS:
        raise ValueError(f"{func}: argument 'variant' must be 'standard' or 'spec20', got {variant!r}")
    n_bins = ((15 if variant == "standard" else 20) if n_bins is None
              else _args.whole(n_bins, "lade.metrics.reliability_diagram", "n_bins", 1, 10**6))
    if n_bins < 1:
        raise ValueError(f"{func}: argument 'n_bins' must be >= 1, got {n_bins}")
    conf = np.empty(n_bins + 1, np.float64)
    acc = np.empty(n_bins + 1, np.float64)
    count = np.empty(n_bins + 1, np.int64)
    value = _C.lt_reliability(func, probs, labels, n_bins, _VARIANTS[variant], conf, acc, count)
    edges = np.arange(n_bins + 1) * (1.0 / n_bins)
    edges[-1] = 1.0
    return {"confidence": conf, "accuracy": acc, "count": count, "edges": edges, "ece": value}


def ece(probs, labels, n_bins=None, variant="standard"):
    """Expected calibration error (see the module docstring for the variants)."""
    return reliability_diagram(probs, labels, n_bins, variant)["ece"]


def nll(probs, labels):
    """Mean -log(clip(p_label, 1e-15, 1))."""
    return _C.lt_nll_brier("lade.metrics.nll", probs, labels)[0]


def brier(probs, labels):
    """Mean over samples of sum_c (p_c - [c == label])^2 (not divided by C)."""
    return _C.lt_nll_brier("lade.metrics.brier", probs, labels)[1]


def summary(probs, labels, train_counts=None, ece_variant="standard"):
    """Top-1, top-5, ECE, NLL, Brier and (with train_counts) many/medium/few of probabilities."""
    classes = probs.shape[1]
    out = {"top1": accuracy(probs, labels), "top5": topk_accuracy(probs, labels, min(5, classes)),
           "ece": ece(probs, labels, variant=ece_variant), "nll": nll(probs, labels), "brier": brier(probs, labels)}
    if train_counts is not None:
        out.update(shot_accuracy(per_class_accuracy(confusion_matrix(probs, labels, classes)), train_counts))
    return out
