"""The decoupled second stage on a finished run (Kang et al., ICLR 2020): the run's penultimate
features (``save_features``, ``python -m lade features RUN_DIR``) and, on them, cRT, LWS,
tau-normalisation and a LADE-loss re-training of the classifier (lade.decoupled), reported beside
the end-to-end model in the same tables (``report``, ``python -m lade decoupled RUN_DIR``).

The re-trained classifiers see the long-tailed training features; tau is chosen on the held-out
set's features when the run has one, otherwise tau = 1 (the training features, which the backbone
has fitted, are no place to choose it). LADE re-training runs instance_epochs(labels, epochs): as
many samples of the smallest class as cRT's class-balanced epochs. Their logits are meant for a
uniform prior, so their test-time adjustment is + log p_t (like Balanced Softmax).
"""
import json
import zipfile
from pathlib import Path

import numpy as np

from lade import decoupled, nn, posthoc, priors
from lade.app import config as config_mod
from lade.app import evaluation, report as report_mod
from lade.app.datasets import load_dataset
from lade.app.runs import RunError, check_output_dir, load_arrays, load_checkpoint, log, run_status, save_atomic
from lade.app.training import build_model, eval_logits

__all__ = ["save_features", "load_features", "report", "FEATURES_FILE"]

FEATURES_FILE = "features.npz"


def _finished_run(run_dir):
    run_dir = Path(run_dir)
    if run_status(run_dir) != "finished":
        raise RunError(f"lade: '{run_dir}' is not a finished run (no final.json); train or --resume it first")
    cfg = config_mod.load(run_dir / "config.yaml")
    if cfg["model"]["classifier"] != "linear":
        raise RunError(f"lade: the decoupled second stage starts from a linear classifier (fc weight and bias); "
                       f"'{run_dir}' has model.classifier {cfg['model']['classifier']}")
    return run_dir, cfg


def _data_root(run_dir, data_root):
    """--data-root, else the data root the run's last session used (run.json), else the config's."""
    if data_root:
        return data_root
    try:
        sessions = json.loads((run_dir / "run.json").read_text())["sessions"]
        return sessions[-1]["data_root"] if Path(sessions[-1]["data_root"]).is_dir() else None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def _check_same_data(run_dir, data):
    """Refuses data other than the run saw: each split's digest against the one run.json recorded (its
    last session). Runs from before lade recorded digests (older folders, zoo entries) are checked on
    what they saved instead: the training counts and the test and held-out labels here, the test and
    held-out logits in save_features; other training images with the same labels then go unnoticed,
    which is logged."""
    info_path = run_dir / "run.json"
    try:
        recorded = json.loads(info_path.read_text())["sessions"][-1].get("data_digest")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise RunError(f"lade: '{info_path}' is missing or damaged ({type(e).__name__}: {e})") from None
    if recorded is not None:
        now = data.digest()
        differ = [split for split in now if not isinstance(recorded, dict) or recorded.get(split) != now[split]]
        if differ:
            raise RunError(f"lade: the {', '.join(differ)} data under '{data.root}' differ from what '{run_dir}' was "
                           f"trained on (their digest is not the one in {info_path}); pass the run's data root")
        return
    saved = load_arrays(run_dir)
    checks = [("training counts", priors.class_counts(data.train[1], data.classes), saved["train_counts"]),
              ("test labels", data.test[1], saved["test_labels"]),
              ("held-out labels", None if data.calib is None else data.calib[1], saved["calib_labels"])]
    for what, now, then in checks:
        if (now is None) != (then is None) or (now is not None and not np.array_equal(now, then)):
            raise RunError(f"lade: the {what} of the data under '{data.root}' differ from those '{run_dir}' saved; "
                           "pass the run's data root")
    log(f"'{run_dir}' predates data digests: of its training images only the counts are checked")


def save_features(run_dir, out=None, data_root=None):
    """Writes the penultimate features of the run's training, held-out and test images (the same
    splits the run used; data_root default: the one the run was trained from), their labels, the
    classifier (fc weight and bias) and the training counts into an .npz (default
    RUN_DIR/features.npz). Checks that the data are those the run saw (see _check_same_data) and that
    fc on the test and held-out features gives their saved logits. Returns the path."""
    run_dir, cfg = _finished_run(run_dir)
    out = Path(out) if out else run_dir / FEATURES_FILE
    if out.exists() and not _is_features_file(out):
        raise RunError(f"lade features: --out '{out}' exists and is not a features file lade wrote; refusing to "
                       f"replace it (use another --out)")
    saved = load_arrays(run_dir)["test_logits"]  # first: a damaged file is named before the slow part
    if saved is None:
        raise RunError(f"lade features: '{run_dir / 'test_logits.npy'}' is missing; it is written when a run finishes")
    data = load_dataset(cfg, _data_root(run_dir, data_root))
    _check_same_data(run_dir, data)
    net = build_model(cfg, data.classes)
    o = cfg["optim"]
    load_checkpoint(run_dir, net, nn.SGD(net, o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                         nesterov=o["nesterov"]), cfg)
    batch = cfg["run"]["eval_batch_size"]
    arrays = {"train_counts": data.counts}
    splits = [("train", data.train), ("test", data.test)] + ([("calib", data.calib)] if data.calib else [])
    for split, (images, labels) in splits:
        log(f"features of {images.shape[0]} {split} images")
        arrays[f"{split}_features"] = np.empty((images.shape[0], net.feature_dim), np.float32)
        logits = eval_logits(net, images, batch, cfg["data"]["resolution"], features=arrays[f"{split}_features"])
        arrays[f"{split}_labels"] = labels
        saved = run_dir / f"{split}_logits.npy"  # the run saved the test and held-out logits, not the training ones
        if split != "train" and saved.is_file():
            saved = np.load(saved)
            if saved.shape != logits.shape or not np.allclose(saved, logits, rtol=1e-4, atol=1e-4):
                raise RunError(f"lade: the checkpoint of '{run_dir}' does not give its saved {split} logits (the "
                               "data or the code changed since it was trained)")
    state = net.state_dict()
    arrays["fc_weight"], arrays["fc_bias"] = state["fc.weight"], state["fc.bias"]
    save_atomic(out, lambda f: np.savez(f, **arrays))
    return out


_FEATURE_ARRAYS = ("train_features", "train_labels", "test_features", "test_labels", "fc_weight", "fc_bias",
                   "train_counts")


def _is_features_file(path):
    """Whether `path` is an .npz holding the arrays save_features writes (checked from the zip directory)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {f"{name}.npy" for name in _FEATURE_ARRAYS} <= set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_features(path):
    """The arrays save_features wrote, as a dict (calib_* only when the run had a held-out set)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.keys()}
    except Exception as e:
        raise RunError(f"lade: '{path}' is not a readable features file ({type(e).__name__}: {e})") from e
    missing = [k for k in _FEATURE_ARRAYS if k not in arrays]
    if missing:
        raise RunError(f"lade: '{path}' lacks {', '.join(missing)} (write it with 'python -m lade features')")
    if ("calib_features" in arrays) != ("calib_labels" in arrays):
        raise RunError(f"lade: '{path}' has only one of calib_features and calib_labels")
    weight = arrays["fc_weight"]
    classes, dim = weight.shape if weight.ndim == 2 else (None, None)
    # key -> (dtype kinds, shape with None for any length, what it is); checked in this order, so a shape
    # taken from an earlier array has been checked
    expected = {"fc_weight": ("f", (classes, dim), "float32 (classes, dim)"),
                "fc_bias": ("f", (classes,), "float32 (classes,)"),
                "train_counts": ("iu", (classes,), "integer (classes,) >= 0")}
    for split in ("train", "test", "calib"):
        if f"{split}_features" in arrays:
            n = arrays[f"{split}_features"].shape[0] if arrays[f"{split}_features"].ndim == 2 else None
            expected[f"{split}_features"] = ("f", (None, dim), "float32 (n, dim) with n >= 1")
            expected[f"{split}_labels"] = ("iu", (n,), f"integer (n,) in [0, classes) with n the rows of "
                                                       f"{split}_features")
    for key, (kinds, shape, what) in expected.items():
        a = arrays[key]
        fits = a.ndim == len(shape) and a.size > 0 and all(want in (None, got) for want, got in zip(shape, a.shape))
        if not fits or a.dtype.kind not in kinds or (kinds == "f" and a.dtype != np.float32):
            raise RunError(f"lade: '{path}': '{key}' must be {what}, got {a.dtype} {a.shape}")
        if kinds == "f" and not np.isfinite(a).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise RunError(f"lade: '{path}': '{key}' holds NaN or Inf (at {where})")
        if kinds == "iu" and (a.min() < 0 or (key.endswith("_labels") and a.max() >= classes)):
            raise RunError(f"lade: '{path}': '{key}' must be {what}, got values in [{a.min()}, {a.max()}]")
    return arrays


def _relabel(result, label):
    result["method"], result["raw_method"] = f"{label} (+log p_t)", label
    result["methods"][0]["label"], result["methods"][1]["label"] = f"{label} (+log p_t)", label
    return result


def report(run_dir, out=None, data_root=None, epochs=10, seed=0):
    """Fits cRT, LWS, tau-normalisation and LADE re-training on the run's features (computed and
    saved first if RUN_DIR/features.npz is missing; the data root as in save_features) and writes one report with the end-to-end
    model and the four decoupled ones (default folder RUN_DIR/decoupled). Returns the markdown."""
    run_dir, cfg = _finished_run(run_dir)
    out = Path(out) if out else run_dir / "decoupled"
    check_output_dir(out)  # before the features and the re-training, which take minutes
    path = run_dir / FEATURES_FILE
    if not path.is_file():
        save_features(run_dir, path, data_root)
    a = load_features(path)
    classes = a["fc_weight"].shape[0]
    x, y, counts = a["train_features"], a["train_labels"], a["train_counts"]
    w, b = a["fc_weight"], a["fc_bias"]
    calib = "calib_features" in a
    batch = min(512, x.shape[0])
    loss_cfg = cfg["loss"]
    lade_opts = {k: loss_cfg[k] for k in ("alpha", "remine_lambda") if cfg["loss"]["name"] == "lade" and k in loss_cfg}
    # tau on the held-out features; without them tau = 1 (unit-norm rows), since the training features,
    # which the backbone has fitted, chose too small a tau (issue 28: 23.3 % against cRT's 31.3 %)
    tau_norm = (decoupled.tau_normalize_select(a["calib_features"], a["calib_labels"], w, b) if calib else
                decoupled.Classifier(posthoc.tau_normalize(w, 1.0), b, tau=1.0,
                                     info={"method": "tau-normalisation", "rule": "tau = 1, no held-out set"}))
    # instance sampling shows a tail class far less often than cRT's class-balanced sampling: as many
    # samples of the smallest class as cRT's `epochs` (lade.decoupled.lade_retrain)
    lade_epochs = decoupled.instance_epochs(y, epochs, classes)
    fitted = [
        ("cRT", decoupled.crt(x, y, classes, epochs=epochs, batch_size=batch, seed=seed)),
        ("LWS", decoupled.lws(x, y, w, b, epochs=epochs, batch_size=batch, seed=seed)),
        ("tau-norm", tau_norm),
        ("LADE re-trained", decoupled.lade_retrain(x, y, priors.prior_from_counts(counts), classes,
                                                   epochs=lade_epochs, batch_size=batch, seed=seed, **lade_opts)),
    ]
    results = [evaluation.evaluate_run(run_dir, estimated_prior=False)]
    for label, clf in fitted:
        r = evaluation.evaluate_logits(
            clf.logits(a["test_features"]), a["test_labels"], counts,
            clf.logits(a["calib_features"]) if calib else None, a["calib_labels"] if calib else None,
            method="balanced", estimated_prior="full", estimated_table=False, name=f"{cfg['name']} {label}")
        if label == "tau-norm":
            r["notes"].append(f"tau = {clf.tau:g}, chosen on the held-out features by balanced accuracy" if calib
                              else "tau = 1 (unit-norm rows): no held-out set to choose it on")
        if label == "LADE re-trained":
            r["notes"].append(f"{lade_epochs} epochs of instance sampling (cRT: {epochs} class-balanced), lr 0.2, "
                              f"cosine schedule, batch {batch}")
        results.append(_relabel(r, label))
    text = report_mod.write_logits_report(results, out, title=f"Decoupled second stage on {cfg['name']}")
    save_atomic(out / "classifiers.json", lambda f: f.write(json.dumps({label: clf.info for label, clf in fitted},
                                                                         indent=1).encode()))
    log(f"wrote {out / 'report.md'}")
    return text
