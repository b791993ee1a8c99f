"""Evaluation metrics (C core: csrc/ltmath/metrics.c).

Scores / probabilities are float32 (n, C) C-contiguous, labels int64 (n,).
Top-k ranks ties by lower class index (k = 1 is numpy.argmax). Many / medium / few group
classes by TRAINING count: > 100 / 20..100 / < 20 (spec §2.2), over classes present in the
evaluated labels. ECE is top-label with equal-width bins: variant 'standard' (default,
15 bins, (lo, hi] as Guo et al. 2017) or 'spec20' (spec §2.4 exactly: 20 bins, [lo, hi),
an extra bin for confidence 1.0, eps 2.2e-16 on counts).
paired_bootstrap compares two methods scored on the same test samples (and seeds).
multilabel_summary scores multi-label sigmoid outputs: logits float32 (n, C) against targets (n, C) 0/1
(uint8 or bool), per label and averaged: binary NLL, Brier, accuracy and F1 at a probability threshold
(0.5). A per-label shift of the logits (lade.posthoc.pc_adjust_multilabel) does not change any label's
ranking of the samples, so per-label ranking metrics (AP, mAP, AUC) are unchanged by it; the thresholded
and calibration metrics here are the ones that show its effect.
"""
import numpy as np

from lade import _C

__all__ = ["accuracy", "topk_accuracy", "predictions", "confusion_matrix", "per_class_accuracy", "shot_accuracy",
           "ece", "reliability_diagram", "nll", "brier", "summary", "paired_bootstrap",
           "multilabel_summary"]

_VARIANTS = {"standard": 0, "spec20": 1}


def topk_accuracy(scores, labels, k=1, return_correct=False):
    """Fraction of samples whose label is among the top k scores; optionally the per-sample mask."""
    acc, correct = _C.topk_accuracy(scores, labels, k)
    return (acc, correct.view(bool)) if return_correct else acc


def accuracy(scores, labels):
    """Top-1 accuracy (argmax == label)."""
    return _C.accuracy(scores, labels)[0]


def predictions(scores):
    """Row-wise first argmax, int64 (n,)."""
    return _C.predictions(scores)


def confusion_matrix(predicted, labels, classes):
    """int64 (C, C) counts, row = true label, column = prediction. `predicted` is an int64
    vector of predictions or a float32 (n, C) score matrix (argmax taken)."""
    if np.ndim(predicted) == 2:
        predicted = predictions(predicted)
    return _C.confusion_matrix(predicted, labels, classes)


def per_class_accuracy(confusion):
    """Per-class recall from a confusion matrix, float64; NaN for classes with no sample."""
    return _C.per_class_accuracy(confusion)


def shot_accuracy(per_class_acc, train_counts, many_above=100, few_below=20):
    """{'many', 'medium', 'few'}: mean per-class accuracy of classes with train count
    > many_above, in [few_below, many_above], < few_below (NaN for an empty group)."""
    acc = np.ascontiguousarray(per_class_acc, dtype=np.float64)
    counts = np.ascontiguousarray(train_counts, dtype=np.int64)
    many, medium, few = _C.shot_accuracy(acc, counts, many_above, few_below)
    return {"many": many, "medium": medium, "few": few}


def reliability_diagram(probs, labels, n_bins=None, variant="standard"):
    """Per-bin data for a reliability diagram: dict with 'confidence' (mean top prob),
    'accuracy', 'count' (n_bins + 1 entries; the last is the spec20 bin for confidence 1.0,
    always empty for 'standard'), 'edges' (n_bins + 1 edges from 0 to 1) and 'ece'.
    n_bins defaults to 15 ('standard') or 20 ('spec20')."""
    func = "lade.metrics.reliability_diagram"
    if variant not in _VARIANTS:
        raise ValueError(f"{func}: argument 'variant' must be 'standard' or 'spec20', got {variant!r}")
    n_bins = (15 if variant == "standard" else 20) if n_bins is None else n_bins
    value, conf, acc, count = _C.reliability_diagram(probs, labels, n_bins, _VARIANTS[variant])
    edges = np.arange(n_bins + 1) * (1.0 / n_bins)
    edges[-1] = 1.0
    return {"confidence": conf, "accuracy": acc, "count": count, "edges": edges, "ece": value}


def ece(probs, labels, n_bins=None, variant="standard"):
    """Expected calibration error (see the module docstring for the variants)."""
    return reliability_diagram(probs, labels, n_bins, variant)["ece"]


def nll(probs, labels):
    """Mean -log(clip(p_label, 1e-15, 1))."""
    return _C.nll(probs, labels)[0]


def brier(probs, labels):
    """Mean over samples of sum_c (p_c - [c == label])^2 (not divided by C)."""
    return _C.brier(probs, labels)[1]


def summary(probs, labels, train_counts=None, ece_variant="standard"):
    """Top-1, top-5, ECE, NLL, Brier and (with train_counts) many/medium/few of probabilities."""
    classes = probs.shape[1]
    out = {"top1": accuracy(probs, labels), "top5": topk_accuracy(probs, labels, min(5, classes)),
           "ece": ece(probs, labels, variant=ece_variant), "nll": nll(probs, labels), "brier": brier(probs, labels)}
    if train_counts is not None:
        out.update(shot_accuracy(per_class_accuracy(confusion_matrix(probs, labels, classes)), train_counts))
    return out


def paired_bootstrap(correct_a, correct_b, replicates=2000, level=0.95, seed=0):
    """Accuracy of method a minus method b on the same test samples, with a paired bootstrap
    interval. correct_a / correct_b: bool or uint8 0/1, shape (n,) for one model each or
    (models, n) for several seeds (row m of a and of b from the same seed). Returns
    {'difference', 'lo', 'hi', 'level', 'replicates'}: the mean over models of the accuracy
    difference, and the central `level` interval of replicates that redraw the n samples with
    replacement, the same draw for both methods and every model."""
    a, b = (_zero_one(x, name) for x, name in ((correct_a, "correct_a"), (correct_b, "correct_b")))
    diff, lo, hi, reps = _C.paired_bootstrap(a, b, replicates, level, seed)
    return {"difference": diff, "lo": lo, "hi": hi, "level": level, "replicates": reps}


def _zero_one(x, name):
    """A (models, n) uint8 view of a bool/uint8 array (a bool array is viewed, never copied)."""
    if isinstance(x, np.ndarray) and x.dtype == np.bool_:
        x = x.view(np.uint8)
    if isinstance(x, np.ndarray) and x.ndim == 1:
        x = x.reshape(1, -1)
    return x


def multilabel_summary(logits, targets, threshold=0.5):
    """Multi-label metrics of sigmoid logits (n, C) float32 against targets (n, C) 0/1 (uint8 or bool).
    Returns {'nll', 'brier', 'accuracy', 'macro_f1'} (means over the labels) and 'per_label':
    {'nll', 'brier', 'accuracy', 'f1'}, float64 (C,) each:
      nll       mean binary cross-entropy, softplus(z) - y z (from the logit: finite for any finite z);
      brier     mean (sigmoid(z) - y)^2;
      accuracy  mean [pred == y] with pred = sigmoid(z) >= threshold;
      f1        2 TP / (2 TP + FP + FN) of pred; NaN for a label neither present nor predicted, which
                macro_f1 (the mean of the others; NaN if none) leaves out."""
    if isinstance(targets, np.ndarray) and targets.dtype == np.bool_:
        targets = targets.view(np.uint8)
    nll_, brier_, acc, f1, mean_nll, mean_brier, mean_acc, macro_f1 = _C.multilabel_metrics(logits, targets, threshold)
    return {"nll": mean_nll, "brier": mean_brier, "accuracy": mean_acc, "macro_f1": macro_f1,
            "per_label": {"nll": nll_, "brier": brier_, "accuracy": acc, "f1": f1}}
