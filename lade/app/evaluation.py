"""The numbers of a model, computed from its saved logits (no retraining), as JSON-able dicts: the report's
first part (report_text renders them as markdown, report_plots draws them, report writes the files).

``evaluate_run(run_dir)`` computes, from test_logits.npy / calib_logits.npy / train_counts.npy:
- uniform test: top-1, top-5, many / medium / few, ECE (15 bins and the 20-bin variant of spec
  §2.4), NLL, Brier, for the raw softmax and for the method's test-time adjustment (spec §2.1:
  PC f - log p_s + log p_t for softmax-trained models, f + log p_t for LADE, Balanced Softmax and
  the other prior-aware losses);
- the shifted tests of spec §2.3 (forward 50..2, uniform, backward 2..50), with the adjustment
  using the oracle p_t, p_t estimated by lade's default estimator (EM, tilted, sparse or free, gated) or by
  BBSE (lade.prior_shift, calibrated on the held-out source set), and no adjustment.
- the estimated-prior table (``estimated_prior_results``): every estimator of lade.prior_shift
  against the oracle p_t and against no adjustment, on every shifted test, under the protocol
  described there (half of each test class held out).
``evaluate_logits`` does the same for anyone's saved logits; ``seed_statistics`` pairs the seeds of runs.
"""
import base64
import hashlib
import inspect
import json
import warnings
from pathlib import Path

import numpy as np

from lade.app import config as config_mod
from lade import losses, metrics, posthoc, prior_shift
from lade.app.runs import RunError, check_array_file, load_arrays, run_status
from lade.priors import prior_from_counts, prior_from_labels
from lade.sampling import SHIFT_SETTINGS, SUITE_DRAWS, shift_suite, shifted_test_subset

__all__ = ["evaluate_run", "evaluate_logits", "evaluate_logit_files", "estimated_prior_results", "held_out_halves",
           "suite_results", "suite_summary", "suite_digest", "seed_statistics", "adjust", "source_logits",
           "load_array", "SETTING_NAMES", "MODES", "ESTIMATORS", "SUITE_ROWS", "BASELINES"]


SETTING_NAMES = [{"forward": "F", "backward": "B", "uniform": ""}[d] + (str(r) if d != "uniform" else "uniform")
                 for d, r in SHIFT_SETTINGS]


MODES = ("none", "oracle", "em", "bbse")


# (name with the test-time adjustment, name of the raw softmax)
_NAMES = {
    "softmax_ce": ("PC Softmax", "Softmax"),
    "balanced_softmax": ("Balanced Softmax", "Balanced Softmax without p_t"),
    "lade": ("LADE", "LADE without p_t"),
    "logit_adjusted": ("Logit-adjusted (+log p_t)", "Logit-adjusted"),
    "focal": ("PC Focal", "Focal"),
    "class_balanced": ("Class-balanced (+log p_t)", "Class-balanced"),
    "ldam_drw": ("LDAM-DRW (+log p_t)", "LDAM-DRW"),
    "causal_norm": ("PC Causal Norm", "Causal Norm"),  # the TDE logits + log p_t, and as they are (spec §2.3)
}


def adjust(f, form, p_s, p_t, out=None):
    if form == "pc":
        return posthoc.pc_adjust(f, p_s, p_t, out=out)
    return posthoc.lade_adjust(f, p_t, out=out)


def _no_adjustment_prior(form, p_s):
    """The p_t under which adjust returns the model's own output: p_s for the PC form (the
    softmax model as trained), uniform for the LADE form (its logits as they are)."""
    return p_s if form == "pc" else np.full_like(p_s, 1.0 / p_s.shape[0])


def source_logits(f, form, p_s):
    """Logits whose softmax estimates the source posterior (what EM / BBSE expect)."""
    return f if form == "pc" else posthoc.lade_adjust(f, p_s)


def _uniform_metrics(probs, labels, counts):
    """metrics.summary's numbers (and the 20-bin ECE), the per-class accuracy, the 15-bin
    reliability diagram and the per-image hits, each pass over the probabilities made once: the
    predictions give top-1, the hits and the per-class accuracy, the diagram gives the ECE."""
    classes = probs.shape[1]
    predicted = metrics.predictions(probs)
    # per-class recall from two bincounts, not a (classes, classes) confusion matrix: 100,000 classes
    # would need 80 GB for it; NaN for a class without test images, as metrics.per_class_accuracy
    total = np.bincount(labels, minlength=classes)
    hits = predicted == labels
    with np.errstate(invalid="ignore"):
        per_class = np.bincount(labels[hits], minlength=classes) / total
    rel = metrics.reliability_diagram(probs, labels)
    s = {"top1": float(np.count_nonzero(hits)) / labels.shape[0],
         "top5": metrics.topk_accuracy(probs, labels, min(5, classes)), "ece": rel["ece"],
         "nll": metrics.nll(probs, labels), "brier": metrics.brier(probs, labels)}
    s.update(metrics.shot_accuracy(per_class, counts))
    s["ece20"] = metrics.ece(probs, labels, variant="spec20")
    return s, per_class, rel, hits


def _shift_estimators(calib, form, p_s, methods, fast=False):
    """{method: (fitted estimator or None, note)} for the estimated-p_t rows of the shifted tests: 'em' is
    lade's default (prior_shift.estimator(): EM, tilted, sparse or free, gated), 'bbse' plain BBSE, ungated. Each is
    fitted once and estimates every shifted test.

    Calibration is bias-corrected temperature scaling on the held-out set when it holds every class;
    otherwise (CIFAR-100-LT at imbalance 100 uses every training image of its head class, so none is left
    to hold out) plain temperature scaling, whose reference prior is p_s. fast: plain temperature scaling
    above FAST_BCTS_MAX_CLASSES classes too, and EM to FAST_TOL. Without a held-out set nothing is
    estimated: EM on uncalibrated posteriors can do far worse than no adjustment (a list-file LADE model:
    16.9 % against 28.5 % on the uniform test), so the EM rows keep the model's own prior, with a note."""
    calib_f, calib_y = calib
    if calib_f is None:
        return {m: (None, "no held-out set to calibrate on: no estimate" + (", no adjustment" if m == "em" else ""))
                for m in methods}
    calibration, note = "bcts", None
    if np.bincount(calib_y, minlength=p_s.shape[0]).min() == 0:
        calibration, note = "ts", "held-out set lacks some classes: temperature scaling without biases"
    elif fast and p_s.shape[0] > FAST_BCTS_MAX_CLASSES:
        calibration = "ts"
    em_options = {"tol": FAST_TOL} if fast else {}
    fitted = {}
    for m in methods:
        est = (prior_shift.estimator(calibration=calibration, **em_options) if m == "em" else
               prior_shift.BBSE(calibration=calibration))
        try:
            fitted[m] = est.fit(source_logits(calib_f, form, p_s), calib_y, p_s), note
        except (ValueError, FloatingPointError) as e:
            fitted[m] = None, str(e)
    return fitted


def _estimate(fitted, f_sub, form, p_s, method):
    """Estimated p_t of a test subset and a note, or (None, reason), from _shift_estimators' fitted[method]."""
    est, note = fitted
    if est is None:
        return (_no_adjustment_prior(form, p_s) if method == "em" else None), note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = est.estimate(source_logits(f_sub, form, p_s))
        except (ValueError, FloatingPointError) as e:
            return None, str(e)
    notes = [note] if note else []
    if res.fell_back:  # BBSE could not invert its confusion matrix: no estimate, so no adjustment
        notes.append("BBSE fell back to no adjustment")
        return _no_adjustment_prior(form, p_s), "; ".join(notes)
    notes += [str(w.message) for w in caught]
    return res.prior, "; ".join(notes) or None


# The estimators of the estimated-prior table: name -> (label, the estimator for a model of training prior
# p_s, labelled target samples per class). All fit bias-corrected temperature scaling on the held-out half. The
# shrunk ones shrink towards no shift (the held-out prior); BBSE's width is the bootstrap's (100 replicates,
# cheap for BBSE; the analytic delta-method width ignores the simplex constraint and overstates it on weak
# models). The family estimators take the training prior as the tilt direction: the long tail.
_PS = prior_shift


ESTIMATORS = {
    "em": ("EM", lambda p_s: _PS.EM(), 0),
    "mlls": ("MLLS + BCTS (EM without smoothing)", lambda p_s: _PS.EM(pseudo_count=0.0), 0),
    "em_gated": (f"EM, gated at {_PS.GATE_LEVEL:g}", lambda p_s: _PS.Gated(_PS.EM()), 0),
    "em_shrunk": ("EM, shrunk (Fisher width)", lambda p_s: _PS.Shrunk(_PS.EM()), 0),
    "em_gated_shrunk": ("EM, gated + shrunk", lambda p_s: _PS.Shrunk(_PS.Gated(_PS.EM())), 0),
    "em_family": ("EM, tilted, sparse or free by LR tests and cross-validation",
                  lambda p_s: _PS.AutoFamilyEM(tilt_prior=p_s), 0),
    "em_family_gated": (f"EM, tilted, sparse or free, gated at {_PS.GATE_LEVEL:g} (the default)",
                        lambda p_s: _PS.Gated(_PS.AutoFamilyEM(tilt_prior=p_s)), 0),
    "em_k1": ("EM + 1 label per class", lambda p_s: _PS.LabelledEM(), 1),
    "em_k5": ("EM + 5 labels per class", lambda p_s: _PS.LabelledEM(), 5),
    "bbse": ("BBSE", lambda p_s: _PS.BBSE(), 0),
    "bbse_gated": (f"BBSE, gated at {_PS.GATE_LEVEL:g}", lambda p_s: _PS.Gated(_PS.BBSE()), 0),
    "bbse_shrunk": ("BBSE, shrunk (bootstrap width)", lambda p_s: _PS.Shrunk(_PS.BBSE(bootstrap=100, seed=0)), 0),
}


def _wrapped_in(estimator, wrapper):
    """Whether `estimator` is, or wraps, a `wrapper` (prior_shift.Gated or Shrunk)."""
    while estimator is not None:
        if isinstance(estimator, wrapper):
            return True
        estimator = getattr(estimator, "estimator", None)
    return False


def _target_subsets(labels, p_s):
    """(name, subset or None) of every column of the estimated-prior table: the shifted tests of
    spec §2.3. None: the pool has too few images per class."""
    for (direction, ratio), name in zip(SHIFT_SETTINGS, SETTING_NAMES):
        try:
            yield name, shifted_test_subset(labels, p_s, ratio, direction)
        except ValueError:
            yield name, None


def held_out_halves(labels, classes):
    """(held_out, pool) test indices: the first half (rounded down) of each class's images in stored
    order is held out, labelled; the rest is the pool the shifted tests are drawn from."""
    held = np.zeros(labels.shape[0], bool)
    for c in range(classes):
        rows = np.flatnonzero(labels == c)
        held[rows[: rows.size // 2]] = True
    return np.flatnonzero(held), np.flatnonzero(~held)


def estimated_prior_results(f, y, p_s, form, estimators=None):
    """The estimated-prior table of one model, from its saved test logits only.

    Protocol: half of each test class is the labelled held-out set (held_out_halves: every class
    present, so BBSE's confusion matrix and bias-corrected calibration can be formed); the shifted
    tests of spec §2.3 are drawn from the other half (img_max = its smallest class count, 50 on
    CIFAR-100). Each estimator estimates p_t from the unlabelled subset; the few-label estimators
    also see the labels of the first k images of each class of the subset (fewer where the class
    has fewer) and estimate the prior of the whole subset. Accuracy is on the whole subset with the
    method's test-time adjustment to that p_t, against the oracle p_t and against no adjustment
    (the prior of the held-out half, uniform: what the model assumes without an estimate).
    Columns: the eleven shifted tests (result['settings']), which lie on the tilted family that
    family='auto' tries first. result['suite'] adds the targets off it, lade.sampling's suite (long-tail
    profiles over random class orders, Dirichlet priors, k classes present, small random sets; several
    draws each), for the default estimator and the two baselines of its goals (SUITE_ROWS): suite_digest."""
    estimators = ESTIMATORS if estimators is None else estimators
    classes = p_s.shape[0]
    held, pool = held_out_halves(y, classes)
    if np.bincount(y[held], minlength=classes).min() == 0:
        return {"skipped": "some class has fewer than 2 test images: no held-out half with every class"}
    calib = (source_logits(np.ascontiguousarray(f[held]), form, p_s), np.ascontiguousarray(y[held]))
    no_shift = prior_from_labels(calib[1], classes)
    fitted = {m: make(p_s).fit(calib[0], calib[1], no_shift) for m, (_, make, _) in estimators.items()}
    acc = {m: [] for m in ("none", "oracle", *estimators)}
    err = {m: [] for m in estimators}
    gated = {m: [] for m in estimators if _wrapped_in(fitted[m], prior_shift.Gated)}
    shrink = {m: [] for m in estimators if _wrapped_in(fitted[m], prior_shift.Shrunk)}
    notes, settings = [], []
    for setting, sub in _target_subsets(y[pool], p_s):
        settings.append(setting)
        if sub is None:
            notes.append(f"{setting}: skipped, the pool has too few images per class for this ratio")
            for table in (acc, err, gated, shrink):
                for m in table:
                    table[m].append(None)
            continue
        rows = pool[sub.indices]
        f_sub, y_sub = np.ascontiguousarray(f[rows]), y[rows]
        acc["none"].append(metrics.accuracy(adjust(f_sub, form, p_s, no_shift), y_sub))
        acc["oracle"].append(metrics.accuracy(adjust(f_sub, form, p_s, sub.prior), y_sub))
        z = source_logits(f_sub, form, p_s)
        for m, (_, _, k) in estimators.items():
            target, z_m = {}, z
            if k:
                labelled = np.concatenate([np.flatnonzero(y_sub == c)[:k] for c in range(classes)])
                unlabelled = np.setdiff1d(np.arange(y_sub.shape[0]), labelled)
                target = {"labelled_counts": np.bincount(y_sub[labelled], minlength=classes).astype(np.int64)}
                z_m = np.ascontiguousarray(z[unlabelled])
            if k and z_m.shape[0] == 0:  # every image of the subset is labelled: its prior is known
                notes.append(f"{setting} {m}: every image of the subset is labelled")
                res = prior_shift.PriorShiftResult(prior=prior_from_counts(target["labelled_counts"]), probs=None,
                                                   method="em", reference_prior=no_shift)
            else:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    res = fitted[m].estimate(z_m, **target)
                notes += [f"{setting} {m}: {w.message}" for w in caught]
            acc[m].append(metrics.accuracy(adjust(f_sub, form, p_s, res.prior), y_sub))
            err[m].append(float(np.abs(res.prior - sub.prior).sum()))
            if m in gated:
                gated[m].append(bool(res.gated))
            if m in shrink:
                shrink[m].append(None if res.gated else float(res.shrink_weight))
    suite = suite_results(f, y, p_s, form, {m: estimators[m][:2] for m in SUITE_ROWS if m in estimators})
    return {"protocol": "half of each test class held out (labelled), shifted tests from the other half",
            "held_out_images": int(held.size), "pool_images": int(pool.size), "settings": settings,
            "estimators": {m: label for m, (label, _, _) in estimators.items()},
            "accuracy": acc, "prior_l1_error": err, "gated": gated, "shrink_weight": shrink, "notes": notes,
            "suite": suite_digest(suite)}


# The suite's rows in the estimated-prior table: the default estimator and the baselines of its goals
# (issue 26 §2: the default, averaged over a target's draws, is never more than 0.5 points below the better
# of MLLS + BCTS and BBSE, suite_summary's gap_mean, nor more than 2 points below on a draw, gap_worst).
BASELINES = ("mlls", "bbse")
SUITE_ROWS = ("em_family_gated", *BASELINES)


def _kl(p, q, n):
    eps = 1.0 / (2.0 * n)
    p, q = (np.asarray(v, np.float64) + eps for v in (p, q))
    p, q = p / p.sum(), q / q.sum()
    return max(float(np.sum(p * np.log(p / q))), 0.0)  # >= 0; rounding gives -1e-17 when p == q


def suite_results(f, y, p_s, form, estimators, draws=SUITE_DRAWS, targets=None):
    """Every estimator on every draw of lade.sampling's suite of shifts (shift_suite), under the
    estimated-prior table's protocol: the held-out half (held_out_halves) fits bias-corrected temperature
    scaling and gives the reference prior, the targets are drawn from the pool half without replacement
    (the first m images of each class of it, m its smallest class count).
    f, y: the model's test logits and labels; p_s the training prior; form the test-time adjustment ('pc'
    or 'add_target', lade.losses.test_time_form); estimators {name: (label, make)}, make(p_s) the
    estimator (fitted once) or make(p_s, n) for one that depends on the target set's size n. Beside
    accuracy, the prior's own error: absolute error (the mean over classes of |p_hat - p|) and
    KL(p || p_hat), both smoothed by eps = 1 / (2 n), QuaPy's measures.
    Returns {"estimators": {name: label}, "targets": [names], "draws": [one dict a draw: target, draw,
    images, classes present, and per method ('none', 'oracle', the estimators) its accuracy, per
    estimator the prior's absolute error and KL]}."""
    classes = p_s.shape[0]
    held, pool = held_out_halves(y, classes)
    if np.bincount(y[held], minlength=classes).min() == 0:
        raise ValueError("lade.app.evaluation.suite_results: some class has fewer than 2 test images: no held-out "
                         "half with every class")
    calib = (source_logits(np.ascontiguousarray(f[held]), form, p_s), np.ascontiguousarray(y[held]))
    no_shift = prior_from_labels(calib[1], classes)
    per_class = np.bincount(y[pool], minlength=classes).min()  # the suite draws from a pool with as many of each
    pool = np.sort(np.concatenate([pool[y[pool] == c][:per_class] for c in range(classes)]))
    fitted = {m: make(p_s).fit(calib[0], calib[1], no_shift) for m, (_, make) in estimators.items()
              if len(inspect.signature(make).parameters) == 1}
    rows_out, names = [], []
    for target in shift_suite(y[pool], classes, draws, targets):
        if target.name not in names:
            names.append(target.name)
        rows = pool[target.indices]
        f_sub, y_sub = np.ascontiguousarray(f[rows]), y[rows]
        n = y_sub.shape[0]
        row = {"target": target.name, "draw": target.draw, "images": int(n),
               "classes_present": int(np.count_nonzero(target.counts)),
               "accuracy": {"none": metrics.accuracy(adjust(f_sub, form, p_s, no_shift), y_sub),
                            "oracle": metrics.accuracy(adjust(f_sub, form, p_s, np.maximum(target.prior, 1e-8)),
                                                       y_sub)},
               "abs_error": {}, "kl": {}, "notes": []}
        z = source_logits(f_sub, form, p_s)
        for m, (_, make) in estimators.items():
            est = fitted.get(m) or make(p_s, n).fit(calib[0], calib[1], no_shift)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = est.estimate(z)
            row["notes"] += [f"{m}: {w.message}" for w in caught]
            row["accuracy"][m] = metrics.accuracy(adjust(f_sub, form, p_s, res.prior), y_sub)
            row["abs_error"][m] = float(np.mean(np.abs(res.prior.astype(np.float64) - target.prior)))
            row["kl"][m] = _kl(target.prior, res.prior, n)
        rows_out.append(row)
    return {"estimators": {m: label for m, (label, _) in estimators.items()}, "targets": names, "draws": rows_out}


def suite_summary(results):
    """Per target and method of suite_results: mean and worst (lowest) accuracy over the draws; per
    estimator the mean absolute error and KL, and its gap to the better baseline (BASELINES, when both
    are among the estimators): gap_mean against the better mean of the two, gap_worst the lowest over the
    draws against the better of the two on that draw. {target: {method: {...}}}."""
    out = {}
    for name in results["targets"]:
        draws = [r for r in results["draws"] if r["target"] == name]
        entry = {}
        for m in draws[0]["accuracy"]:
            acc = np.array([r["accuracy"][m] for r in draws])
            entry[m] = {"mean": float(acc.mean()), "worst": float(acc.min()), "draws": len(draws)}
            if m in draws[0]["abs_error"]:
                entry[m]["abs_error"] = float(np.mean([r["abs_error"][m] for r in draws]))
                entry[m]["kl"] = float(np.mean([r["kl"][m] for r in draws]))
                if all(b in draws[0]["accuracy"] for b in BASELINES):
                    best_mean = max(np.mean([r["accuracy"][b] for r in draws]) for b in BASELINES)
                    per_draw = acc - np.array([max(r["accuracy"][b] for b in BASELINES) for r in draws])
                    entry[m]["gap_mean"], entry[m]["gap_worst"] = float(acc.mean() - best_mean), float(per_draw.min())
        out[name] = entry
    return out


def suite_digest(results):
    """What the report keeps of suite_results (the draws summarised): {"estimators": {name: label},
    "targets": [names], "summary": suite_summary(results), "images": {target: [fewest, most images, draws]}}."""
    sizes = {t: [r["images"] for r in results["draws"] if r["target"] == t] for t in results["targets"]}
    return {"estimators": results["estimators"], "targets": results["targets"], "summary": suite_summary(results),
            "images": {t: [min(v), max(v), len(v)] for t, v in sizes.items()}}


def evaluate_run(run_dir, estimated_prior=True):
    """All numbers of a finished run, as a JSON-able dict (also used by write_comparison).
    estimated_prior=False leaves out the estimated-prior table (about 100 prior_shift.adapt calls,
    a minute or more for 100 classes)."""
    run_dir = Path(run_dir)
    if run_status(run_dir) != "finished":
        raise FileNotFoundError(f"lade.evaluate: '{run_dir}' is not a finished run (no final.json); train or "
                                f"--resume it first")
    cfg = config_mod.load(run_dir / "config.yaml")
    arrays = load_arrays(run_dir)
    try:
        final = json.loads((run_dir / "final.json").read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"lade.evaluate: '{run_dir / 'final.json'}' is not readable JSON ({e})") from e
    if not isinstance(final, dict):
        raise RunError(f"lade.evaluate: '{run_dir / 'final.json'}': expected a JSON object, got {str(final)[:60]!r}")
    missing = [f"'{run_dir / (k + '.npy')}'" for k in ("train_counts", "test_logits") if arrays[k] is None]
    if missing:  # load_arrays returns None for a missing file; test_labels go with test_logits
        raise RunError(f"lade.evaluate: the run folder is incomplete, missing {' and '.join(missing)}")
    counts, f, y = arrays["train_counts"], arrays["test_logits"], arrays["test_labels"]
    calib = (arrays["calib_logits"], arrays["calib_labels"])
    p_s = prior_from_counts(counts)
    form = losses.test_time_form(cfg["loss"]["name"])
    result = _evaluate(f, y, counts, p_s, form, cfg["loss"]["name"], calib, "full", estimated_prior, [])
    d = cfg["data"]
    # a file list taken as it is (data.lt_subset false) has the imbalance of its counts, not data.imbalance
    as_listed = d["dataset"] in ("listfile", "imagefolder") and not d["lt_subset"]
    result.update(name=cfg["name"], run_dir=str(run_dir), setup={
        "dataset": d["dataset"], "imbalance": float(counts.max() / counts.min()) if as_listed else d["imbalance"],
        "epochs": cfg["optim"]["epochs"],
        "batch_size": cfg["optim"]["batch_size"], "lr": cfg["optim"]["lr"], "precision": cfg["run"]["precision"],
        "seed": cfg["run"]["seed"],
        "model_seed": cfg["model"]["seed"], "train_images": final["train_images"], "test_images": final["test_images"],
        "calib_images": final["calib_images"], "train_seconds": final["train_seconds"]})
    return result


# --method of `evaluate --logits`: the training loss the logits come from decides the test-time
# adjustment (spec §2.1) and the names in the tables.
LOGIT_METHODS = {"softmax": ("pc", "softmax_ce"), "balanced": ("add_target", "balanced_softmax"),
                 "lade": ("add_target", "lade")}


# Above this many test logits (n x classes) estimated_prior="auto" picks the fast protocol.
FAST_ABOVE = 5_000_000


# The fast protocol's EM stops when no class moves by this much (the full protocol's: 1e-8).
FAST_TOL = 1e-5


# Bias-corrected calibration costs O(rows x classes^2) per Newton step (67 s for 2,500 rows of
# 1,000 classes on the 2-core EPYC); above this many classes the fast protocol uses plain
# temperature scaling.
FAST_BCTS_MAX_CLASSES = 200


def load_array(path, what):
    """An array from a .npy, .npz (one array, or the one named `what`) or .csv/.txt file (comma or
    whitespace separated numbers). Errors name the file."""
    path = Path(path)
    func = f"lade.evaluate: {what} file '{path}'"
    if not path.is_file():
        raise RunError(f"{func} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        check_array_file(path, f"lade.evaluate: {what} file")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                if what in keys:
                    return z[what]
                if len(keys) == 1:
                    return z[keys[0]]
            raise RunError(f"{func} holds {len(keys)} arrays ({', '.join(keys[:6])}); expected one, or one named "
                           f"'{what}'")
        if suffix in (".csv", ".txt"):
            with open(path) as fh:
                comma = "," in fh.readline()
            return np.loadtxt(path, delimiter="," if comma else None, ndmin=2 if what.endswith("logits") else 1)
    except RunError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise RunError(f"{func} is not readable ({e})") from e
    raise RunError(f"{func}: expected a .npy, .npz, .csv or .txt file, got '{path.suffix}'")


def _as_logits(a, what):
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise RunError(f"lade.evaluate: {what} must be a 2-d array (samples, classes) with >= 2 classes, got shape "
                       f"{a.shape}")
    if a.dtype.kind not in "fiu":
        raise RunError(f"lade.evaluate: {what} must be real numbers, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        bad = tuple(np.argwhere(~np.isfinite(a))[0].tolist())
        raise RunError(f"lade.evaluate: {what} has a non-finite value {a[bad]} at {bad}")
    return a


def _as_integers(a, what, n, classes=None):
    a = np.asarray(a)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise RunError(f"lade.evaluate: {what} must be a 1-d array of {n} entries, got shape {a.shape}")
    if a.dtype.kind == "f":
        wrong = ~np.isfinite(a) | (a != np.round(a))
        if wrong.any():
            bad = int(np.flatnonzero(wrong)[0])
            raise RunError(f"lade.evaluate: {what} must be whole numbers, got {a[bad]} at index {bad}")
    elif a.dtype.kind not in "iu":
        raise RunError(f"lade.evaluate: {what} must be integers, got {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if classes is not None and a.size and (a.min() < 0 or a.max() >= classes):
        bad = int(np.flatnonzero((a < 0) | (a >= classes))[0])
        raise RunError(f"lade.evaluate: {what}[{bad}] = {a[bad]} is outside [0, {classes}) (the logits have "
                       f"{classes} columns)")
    return a


def _source_prior(counts, y, zero_count_floor, notes):
    """p_s from the training counts. A class without training images has no log prior: refused,
    naming it, unless zero_count_floor > 0 counts it as that many images (then noted)."""
    if (counts < 0).any():
        c = int(np.flatnonzero(counts < 0)[0])
        raise RunError(f"lade.evaluate: train_counts[{c}] = {counts[c]} is negative")
    zero = np.flatnonzero(counts == 0)
    in_test = np.bincount(y, minlength=counts.size)
    if zero.size and not zero_count_floor:
        listed = ", ".join(f"{c} ({in_test[c]} test images)" for c in zero[:10]) + (" ..." if zero.size > 10 else "")
        raise RunError(f"lade.evaluate: train_counts is 0 for class(es) {listed}: their log prior is -inf. Pass "
                       "zero_count_floor (--zero-count-floor), e.g. 0.5, to count each as that many training images, "
                       "or drop the classes")
    if zero.size:
        unseen = [int(c) for c in zero if in_test[c]]
        notes.append(f"classes without training images: {', '.join(map(str, zero[:20]))}"
                     f"{' ...' if zero.size > 20 else ''} ({zero.size}); their training prior is floored at "
                     f"{zero_count_floor:g} images" + (f"; {len(unseen)} of them are in the test set (class "
                                                      f"{', '.join(map(str, unseen[:20]))}), counted as few-shot"
                                                      if unseen else ""))
    return prior_from_counts(counts, eps=float(zero_count_floor or 0.0))


def evaluate_logits(logits, labels, train_counts, calib_logits=None, calib_labels=None, method="softmax",
                    estimated_prior="auto", zero_count_floor=None, name="logits", fast_bbse=False,
                    estimated_table=None):
    """The full report of any model's saved logits, as evaluate_run's JSON-able dict (write it with
    write_logits_report). logits (n, C) of the test set, labels (n,), train_counts (C,) the training
    images per class; calib_logits / calib_labels an optional labelled held-out source set.
    method: 'softmax' (the model was trained with softmax CE: PC adjustment f - log p_s + log p_t),
    'balanced' (Balanced Softmax / LADE-CE) or 'lade' (both f + log p_t).

    estimated_prior: 'full' is evaluate_run's protocol (per shifted test, the default estimator and BBSE,
    and the estimated-prior table of every estimator in ESTIMATORS, estimated_prior_results);
    'fast' calibrates bias-corrected up to FAST_BCTS_MAX_CLASSES classes (plain temperature scaling above),
    runs the default estimator with EM to FAST_TOL per shifted test, BBSE only with
    fast_bbse=True, and leaves out the estimated-prior table; 'none' leaves out every estimate;
    'auto' is 'full' up to FAST_ABOVE test logits, 'fast' above. estimated_table=False leaves the
    estimated-prior table out of 'full' (default: with it).

    A class with train count 0 is refused (its log prior is -inf) unless zero_count_floor > 0 counts
    it as that many images; a class in the test set but not in training is then reported in the
    notes. Classes without test images get no per-class accuracy (NaN) and shifted tests that need
    them are skipped with a note."""
    if method not in LOGIT_METHODS:
        raise RunError(f"lade.evaluate: method must be one of {', '.join(LOGIT_METHODS)}, got {method!r}")
    if estimated_prior not in ("auto", "full", "fast", "none"):
        raise RunError(f"lade.evaluate: estimated_prior must be 'auto', 'full', 'fast' or 'none', got "
                       f"{estimated_prior!r}")
    if zero_count_floor is not None and not (isinstance(zero_count_floor, (int, float)) and
                                             0 < zero_count_floor < float("inf")):
        raise RunError(f"lade.evaluate: zero_count_floor (--zero-count-floor) must be a finite number > 0, got "
                       f"{zero_count_floor!r}")
    f = _as_logits(logits, "logits")
    classes = f.shape[1]
    y = _as_integers(labels, "labels", f.shape[0], classes)
    counts = _as_integers(train_counts, "train_counts", classes)
    if (calib_logits is None) != (calib_labels is None):
        raise RunError("lade.evaluate: calib_logits and calib_labels must be given together")
    calib = (None, None)
    if calib_logits is not None:
        cf = _as_logits(calib_logits, "calib_logits")
        if cf.shape[1] != classes:
            raise RunError(f"lade.evaluate: calib_logits has {cf.shape[1]} classes, the test logits {classes}")
        calib = (cf, _as_integers(calib_labels, "calib_labels", cf.shape[0], classes))
    notes = []
    p_s = _source_prior(counts, y, zero_count_floor, notes)
    form, loss_name = LOGIT_METHODS[method]
    if estimated_prior == "auto":
        estimated_prior = "full" if f.size <= FAST_ABOVE else "fast"
    table = estimated_prior == "full" and estimated_table is not False
    result = _evaluate(f, y, counts, p_s, form, loss_name, calib, estimated_prior, table, notes, fast_bbse)
    # train_images in Python ints: an int64 sum of counts like 2^62 wraps around
    result.update(name=name, run_dir=None, setup={
        "source": "logits", "classes": classes, "test_images": int(f.shape[0]),
        "calib_images": 0 if calib[0] is None else int(calib[0].shape[0]), "train_images": sum(map(int, counts)),
        "imbalance": float(counts.max() / max(counts.min(), zero_count_floor or 0)), "protocol": estimated_prior})
    return result


def evaluate_logit_files(logits, labels, train_counts, calib_logits=None, calib_labels=None, **kw):
    """evaluate_logits on arrays read from files (load_array: .npy, .npz, .csv)."""
    load = {k: None if v is None else load_array(v, k) for k, v in
            dict(logits=logits, labels=labels, train_counts=train_counts, calib_logits=calib_logits,
                 calib_labels=calib_labels).items()}
    return evaluate_logits(**load, **kw)


def _evaluate(f, y, counts, p_s, form, loss_name, calib, protocol, estimated_table, notes, fast_bbse=False):
    """The numbers of one model from its logits (evaluate_run and evaluate_logits). protocol for the
    estimates of the shifted tests: 'full', 'fast' or 'none' (see evaluate_logits); estimated_table
    adds the estimated-prior table (estimated_prior_results)."""
    adjusted_name, raw_name = _NAMES[loss_name]
    methods = []
    # two (n, C) buffers serve every pass below (at ImageNet-LT scale a fresh array per pass costs
    # as much in page faults as the pass itself): `work` for probabilities and adjusted logits,
    # `rows` for the rows of a shifted test
    work, rows = np.empty_like(f), np.empty_like(f)
    for label, adjusted in ((adjusted_name, True), (raw_name, False)):
        probs = posthoc.softmax(adjust(f, form, p_s, None, out=work) if adjusted else f, out=work)
        summary, per_class, rel, hits = _uniform_metrics(probs, y, counts)
        methods.append({"label": label, "uniform": summary, "per_class": per_class.tolist(),
                        "reliability": {k: np.asarray(v).tolist() for k, v in rel.items()},
                        "correct": _pack_correct(hits)})
    estimators = () if protocol == "none" else ("em", "bbse") if protocol == "full" or fast_bbse else ("em",)
    fitted = _shift_estimators(calib, form, p_s, estimators, fast=protocol == "fast")
    if protocol == "fast":
        notes.append(f"estimates: fast protocol, EM to tol {FAST_TOL:g}"
                     f"{' and BBSE' if 'bbse' in estimators else ''} per shifted test; no estimated-prior table")
    acc = {m: [] for m in MODES}
    prior_error = {"em": [], "bbse": []}
    for (direction, ratio), setting in zip(SHIFT_SETTINGS, SETTING_NAMES):
        try:
            sub = shifted_test_subset(y, p_s, ratio, direction)
        except ValueError:  # a truncated test set leaves some class without images at this ratio
            notes.append(f"{setting}: skipped, the test set has too few images per class for this ratio")
            for m in MODES:
                acc[m].append(None)
            for m in prior_error:
                prior_error[m].append(None)
            continue
        m = sub.indices.shape[0]
        f_sub, y_sub, scratch = np.take(f, sub.indices, axis=0, out=rows[:m], mode="clip"), y[sub.indices], work[:m]
        acc["none"].append(metrics.accuracy(f_sub, y_sub))
        acc["oracle"].append(metrics.accuracy(adjust(f_sub, form, p_s, sub.prior, out=scratch), y_sub))
        for method in ("em", "bbse"):
            if method not in estimators:
                p_hat, note = None, None
            else:
                p_hat, note = _estimate(fitted[method], f_sub, form, p_s, method)
            if note:
                notes.append(f"{setting} {method.upper()}: {note}")
            if p_hat is None:
                acc[method].append(None)
                prior_error[method].append(None)
            else:
                acc[method].append(metrics.accuracy(adjust(f_sub, form, p_s, p_hat, out=scratch), y_sub))
                prior_error[method].append(float(np.abs(p_hat - sub.prior).sum()))
    return {
        "method": adjusted_name, "raw_method": raw_name, "loss": loss_name, "test_time_form": form,
        "train_counts": counts.tolist(), "test_labels_sha256": hashlib.sha256(y.astype("<i8").tobytes()).hexdigest(),
        "methods": methods,
        "shift": {"settings": SETTING_NAMES, "accuracy": acc, "prior_l1_error": prior_error},
        "estimated_prior": estimated_prior_results(f, y, p_s, form) if estimated_table else {},
        "notes": notes,
    }


SEED_LEVEL = 0.95        # the paired bootstrap interval of seed_statistics


SEED_REPLICATES = 2000


def _pack_correct(correct):
    """Per test image whether a method got it right, as stored in the results (1 bit an image, base64):
    the paired bootstrap of seed_statistics needs the images, not only the accuracy."""
    return {"images": int(correct.shape[0]), "bits": base64.b64encode(np.packbits(correct != 0)).decode()}


def _unpack_correct(packed):
    bits = np.frombuffer(base64.b64decode(packed["bits"]), np.uint8)
    return np.ascontiguousarray(np.unpackbits(bits, count=packed["images"]))


def seed_statistics(results):
    """Runs of one config that differ only in their seeds: mean and standard deviation of uniform
    top-1 per method (configs with two seeds or more), and for every two configs on the same data
    (dataset, imbalance, test set) with as many seeds, the paired bootstrap (lade.metrics.paired_bootstrap
    over the test images stored in the results; the m-th seeds paired) of the difference of their adjusted
    methods, pooled over the seeds and for each seed. With one seed each, that interval counts the test
    images' noise only, not the seeds'.
    Returns {"seeds": [per method and config], "pairs": [per two configs]}."""
    groups = {}
    for r in results:
        same = {k: v for k, v in r["setup"].items() if k not in ("seed", "model_seed", "train_seconds")}
        groups.setdefault(json.dumps([r["name"], r["loss"], same], sort_keys=True), []).append(r)
    groups = {k: sorted(g, key=lambda r: (r["setup"]["seed"], r["setup"]["model_seed"])) for k, g in groups.items()
              if len({(r["setup"]["seed"], r["setup"]["model_seed"]) for r in g}) == len(g)}
    seeds = []
    for g in groups.values():
        if len(g) < 2:
            continue
        for i, m in enumerate(g[0]["methods"]):
            top1 = np.array([r["methods"][i]["uniform"]["top1"] for r in g]) * 100
            seeds.append({"method": m["label"], "config": f"{g[0]['name']} ({g[0]['loss']})", "seeds": len(g),
                          "mean": float(top1.mean()), "std": float(top1.std(ddof=1)), "per_seed": top1.tolist()})
    names = list(groups)
    data = {k: tuple(g[0]["setup"][key] for key in ("dataset", "imbalance", "test_images")) for k, g in groups.items()}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if data[a] == data[b]]
    out = []
    # the adjusted method of each run (uniform p_t), image by image, and the test labels it was scored on
    correct = {k: [_unpack_correct(r["methods"][0]["correct"]) for r in g] for k, g in groups.items()}
    title = {k: f"{g[0]['method']} ({g[0]['name']})" for k, g in groups.items()}

    def bootstrap(a, b):
        res = metrics.paired_bootstrap(np.stack(a), np.stack(b), SEED_REPLICATES, SEED_LEVEL, seed=0)
        return {"difference": 100 * res["difference"], "lo": 100 * res["lo"], "hi": 100 * res["hi"]}

    for a, b in pairs:
        pair = {"a": title[a], "b": title[b], "paired": False}
        labels = {r["test_labels_sha256"] for r in groups[a] + groups[b]}
        if len(groups[a]) == len(groups[b]) and len(labels) == 1:
            pair.update(paired=True, level=SEED_LEVEL, images=int(correct[a][0].shape[0]), seeds=len(groups[a]),
                        **bootstrap(correct[a], correct[b]))
            if len(groups[a]) > 1:  # each seed's pair alone too: the test images' noise at that seed
                pair["per_seed"] = [dict(seeds=[ra["setup"]["seed"], rb["setup"]["seed"]], **bootstrap([ca], [cb]))
                                    for ra, rb, ca, cb in zip(groups[a], groups[b], correct[a], correct[b])]
        out.append(pair)
    return {"seeds": seeds, "pairs": out}
