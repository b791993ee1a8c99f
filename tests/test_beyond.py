"""Evaluating anyone's saved logits (lade.app.evaluation.evaluate_logits, `evaluate --logits`) and the
decoupled second stage on a run's features (`features`, `decoupled`), from the command line."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import lade
from lade import posthoc, priors
from lade.app import evaluation
from lade.app.cli import main
from lade.app.runs import RunError
from test_cli import ENV, TINY, run_main, tiny_root, train_args  # noqa: F401  (tiny_root is a fixture)

C = 10


def synthetic(per_class=40, seed=0):
    """Logits of a model trained on a long-tailed set (biased by log p_s) and a balanced test set."""
    rng = np.random.default_rng(seed)
    counts = priors.lt_profile(C, 500, 0.01)
    y = np.repeat(np.arange(C), per_class).astype(np.int64)
    f = rng.normal(size=(y.size, C)).astype(np.float32)
    f[np.arange(y.size), y] += 2.5
    f += np.log(priors.prior_from_counts(counts))
    return f, y, counts


def test_evaluate_logits_matches_direct_computation_and_the_fast_protocol_is_close():
    f, y, counts = synthetic()
    fc, yc = synthetic(per_class=20, seed=1)[:2]
    full = evaluation.evaluate_logits(f, y, counts, fc, yc, method="softmax", estimated_prior="full")
    pc = posthoc.pc_adjust(f, priors.prior_from_counts(counts))
    assert full["methods"][0]["label"] == "PC Softmax"
    assert full["methods"][0]["uniform"]["top1"] == pytest.approx(np.mean(pc.argmax(1) == y))
    assert full["methods"][1]["uniform"]["top1"] == pytest.approx(np.mean(f.argmax(1) == y))
    assert "estimators" in full["estimated_prior"]
    fast = evaluation.evaluate_logits(f, y, counts, fc, yc, method="softmax", estimated_prior="fast")
    assert fast["estimated_prior"] == {} and fast["shift"]["accuracy"]["oracle"] == full["shift"]["accuracy"]["oracle"]
    # the fast protocol (EM to a looser tolerance) estimates about as well as the full one
    for a, b in zip(fast["shift"]["prior_l1_error"]["em"], full["shift"]["prior_l1_error"]["em"]):
        assert a == pytest.approx(b, abs=0.05)
    none = evaluation.evaluate_logits(f, y, counts, method="lade", estimated_prior="none")
    assert none["shift"]["accuracy"]["em"] == [None] * 11 and none["method"] == "LADE"


def test_evaluate_logits_does_not_depend_on_the_thread_count():
    """softmax, the adjustment, accuracy, the temperature fit and EM run on the thread pool above
    65,536 values; each row is computed the same way on any thread and sums are added in a fixed
    order, so one thread and two give the same report to the last bit."""
    f, y, counts = synthetic(per_class=200)  # 2,000 x 10 test logits: over the parallel threshold
    fc, yc = synthetic(per_class=100, seed=1)[:2]
    f, fc = np.repeat(f, 8, axis=1) + 0.01 * np.arange(80, dtype=np.float32), np.repeat(fc, 8, axis=1)
    counts = np.repeat(counts, 8)
    results, before = [], lade.get_num_threads()
    try:
        for threads in (1, 2):
            lade.set_num_threads(threads)
            results.append(json.dumps(evaluation.evaluate_logits(f, y * 8, counts, fc, yc * 8, estimated_prior="fast")))
    finally:
        lade.set_num_threads(before)
    assert results[0] == results[1]


def test_zero_count_class_is_refused_by_name_or_floored_and_reported():
    f, y, counts = synthetic()
    counts = counts.copy()
    counts[7] = 0
    with pytest.raises(RunError, match=r"train_counts is 0 for class\(es\) 7 \(40 test images\)"):
        evaluation.evaluate_logits(f, y, counts)
    r = evaluation.evaluate_logits(f, y, counts, zero_count_floor=0.5, estimated_prior="none")
    assert any("7" in n and "in the test set" in n for n in r["notes"])
    assert np.isfinite(r["methods"][0]["uniform"]["top1"])


def test_evaluate_logits_refuses_bad_arrays_with_named_errors():
    f, y, counts = synthetic()
    bad = f.copy()
    bad[3, 2] = np.inf
    with pytest.raises(RunError, match=r"logits has a non-finite value inf at \(3, 2\)"):
        evaluation.evaluate_logits(bad, y, counts)
    with pytest.raises(RunError, match=r"labels\[0\] = 12 is outside \[0, 10\)"):
        evaluation.evaluate_logits(f, y + 12, counts)
    with pytest.raises(RunError, match=r"train_counts must be a 1-d array of 10 entries"):
        evaluation.evaluate_logits(f, y, counts[:5])
    with pytest.raises(RunError, match=r"method must be one of"):
        evaluation.evaluate_logits(f, y, counts, method="pc")


def test_cli_evaluate_logits_written_by_numpy_alone(tmp_path, capsys):
    f, y, counts = synthetic()
    np.save(tmp_path / "logits.npy", f)
    np.savez(tmp_path / "labels.npz", labels=y)
    np.savetxt(tmp_path / "counts.csv", counts, fmt="%d", delimiter=",")
    np.savetxt(tmp_path / "calib_logits.csv", f[::2], delimiter=",")
    np.savetxt(tmp_path / "calib_labels.txt", y[::2], fmt="%d")
    out = tmp_path / "rep"
    code, text, err = run_main(["evaluate", "--logits", tmp_path / "logits.npy", "--labels", tmp_path / "labels.npz",
                                "--train-counts", tmp_path / "counts.csv", "--calib-logits",
                                tmp_path / "calib_logits.csv", "--calib-labels", tmp_path / "calib_labels.txt",
                                "--method", "balanced", "--out", out], capsys)
    assert code == 0, err
    assert "## Shifted tests" in text and "Balanced Softmax" in text and "## Estimated target prior" in text
    results = json.loads((out / "results.json").read_text())
    assert results["methods"][0]["uniform"]["top1"] == pytest.approx(np.mean(f.argmax(1) == y))
    assert (out / "shifted_tests.png").stat().st_size > 1000
    code, _, err = run_main(["evaluate", "--logits", tmp_path / "nope.npy", "--labels", tmp_path / "labels.npz",
                             "--train-counts", tmp_path / "counts.csv"], capsys)
    assert code == 2 and "logits file" in err and "nope.npy" in err and "does not exist" in err
    code, _, err = run_main(["evaluate", "--logits", tmp_path / "logits.npy"], capsys)
    assert code == 2 and "go together" in err


@pytest.fixture(scope="module")
def small_run(tiny_root, tmp_path_factory):  # noqa: F811
    """A 1-epoch LADE run on 6 test and 4 held-out test images per class."""
    out = tmp_path_factory.mktemp("small") / "run"
    assert main([str(a) for a in train_args(tiny_root, out, "optim.epochs=1", "data.test_per_class=6",
                                            "data.calib_test_per_class=4")]) == 0
    return out


def test_features_and_decoupled_stage_from_the_cli(small_run, capsys):
    reference_run = small_run
    code, _, err = run_main(["features", reference_run], capsys)
    assert code == 0, err
    with np.load(reference_run / "features.npz") as z:
        a = {k: z[k] for k in z.keys()}
    # fc on the saved test features gives the run's test logits
    logits = a["test_features"] @ a["fc_weight"].T + a["fc_bias"]
    np.testing.assert_allclose(logits, np.load(reference_run / "test_logits.npy"), rtol=1e-4, atol=1e-4)
    assert a["train_features"].shape[0] == a["train_labels"].shape[0] == a["train_counts"].sum()
    code, text, err = run_main(["decoupled", reference_run, "--epochs", "2"], capsys)
    assert code == 0, err
    for label in ("LADE", "cRT (+log p_t)", "LWS (+log p_t)", "tau-norm (+log p_t)", "LADE re-trained (+log p_t)"):
        assert label in text
    results = json.loads((reference_run / "decoupled" / "results.json").read_text())
    assert len(results) == 5 and all(len(r["shift"]["accuracy"]["oracle"]) == 11 for r in results)
    # the main() entry point also reports a run that is not finished
    assert main(["decoupled", str(reference_run / "missing")]) == 2


def test_samplers_are_selectable_in_configs(tiny_root, tmp_path, capsys):  # noqa: F811
    from lade import sampling
    from lade.app import config, training
    labels = np.repeat(np.arange(3), [6, 3, 1]).astype(np.int64)
    for kind, cls in (("class_aware", sampling.ClassAwareSampler), ("square_root", sampling.SquareRootSampler),
                      ("progressive", sampling.ProgressivelyBalancedSampler)):
        cfg = config.validate({"data": {"sampler": kind}})
        s = training.build_sampler(cfg, labels, 3)
        assert isinstance(s, cls)
    assert len(training.build_sampler(config.validate({"data": {"sampler": "class_aware"}}), labels, 3)) == 18
    # the one owner of the default order: instance sampling is an InstanceSampler of run.seed
    default = training.build_sampler(config.validate({"run": {"seed": 4}}), labels, 3)
    assert isinstance(default, sampling.InstanceSampler) and (len(default), default.seed) == (10, 4)
    with pytest.raises(config.ConfigError, match=r"key 'data.sampler' must be one of"):
        config.validate({"data": {"sampler": "balanced"}})
    # a class-aware run trains from the command line: an epoch is largest class x classes images
    out = tmp_path / "ca"
    code, _, err = run_main(train_args(tiny_root, out, "optim.epochs=1", "data.sampler=class_aware", "--no-report"),
                            capsys)
    assert code == 0, err
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    counts = np.load(out / "train_counts.npy")
    assert row["images_per_s"] * row["seconds"] == pytest.approx(counts.max() * len(counts) // 16 * 16, rel=1e-6)


def test_features_refuses_data_other_than_the_run_trained_on(small_run, tiny_root, tmp_path, capsys):  # noqa: F811
    """Issue 28: with another archive, the training features came from other images; only the test
    features were checked (the test batch here is the run's, so that check passes)."""
    other = tmp_path / "other"
    shutil.copytree(tiny_root, other)
    for batch in (other / "cifar-10-batches-bin").glob("data_batch_*.bin"):
        records = np.fromfile(batch, np.uint8).reshape(-1, 1 + 3072)
        records[:, 1:] = 255 - records[:, 1:]  # the same labels, other pixels
        records.tofile(batch)
    run = shutil.copytree(small_run, tmp_path / "run")
    (run / "features.npz").unlink(missing_ok=True)
    code, _, err = run_main(["features", run, "--data-root", other], capsys)
    assert code == 2 and f"the train data under '{other}' differ from what '{run}' was trained on" in err, err
    assert not (run / "features.npz").exists()
    # a run from before data digests: its training images are not checked, and it says so; its held-out
    # images are checked on their saved logits (the last 4 test images of each class, the first 6 are tested)
    info = json.loads((run / "run.json").read_text())
    for session in info["sessions"]:
        del session["data_digest"]
    (run / "run.json").write_text(json.dumps(info))
    code, _, err = run_main(["features", run, "--data-root", other], capsys)
    assert code == 0 and "predates data digests: of its training images only the counts are checked" in err, err
    held_out = tmp_path / "held_out"
    shutil.copytree(tiny_root, held_out)
    records = np.fromfile(held_out / "cifar-10-batches-bin" / "test_batch.bin", np.uint8).reshape(10, 10, 1 + 3072)
    records[:, 6:, 1:] = 255 - records[:, 6:, 1:]
    records.tofile(held_out / "cifar-10-batches-bin" / "test_batch.bin")
    code, _, err = run_main(["features", run, "--data-root", held_out], capsys)
    assert code == 2 and f"the checkpoint of '{run}' does not give its saved calib logits" in err, err


def test_decoupled_names_the_users_file_when_one_is_missing_or_damaged(small_run, tmp_path, capsys):
    """Issue 28: without train_counts.npy the error was prior_from_counts' on 'counts'; Inf in features.npz
    was named 'features' of lade.decoupled.crt, or 'logits'."""
    run = shutil.copytree(small_run, tmp_path / "run")
    if not (run / "features.npz").is_file():
        assert run_main(["features", run], capsys)[0] == 0
    (run / "train_counts.npy").rename(tmp_path / "train_counts.npy")
    code, _, err = run_main(["decoupled", run, "--epochs", "1"], capsys)
    assert code == 2 and f"the run folder is incomplete, missing '{run / 'train_counts.npy'}'" in err, err
    (tmp_path / "train_counts.npy").rename(run / "train_counts.npy")
    with np.load(run / "features.npz") as z:
        good = {k: z[k] for k in z.keys()}
    bad_values = [("train_features", lambda a: a.__setitem__((3, 2), np.inf), r"'train_features' holds NaN or Inf "
                                                                               r"\(at \(3, 2\)\)"),
                  ("calib_features", lambda a: a.__setitem__((0, 0), np.nan), r"'calib_features' holds NaN or Inf"),
                  ("fc_weight", lambda a: a.__setitem__((1, 1), -np.inf), r"'fc_weight' holds NaN or Inf"),
                  ("test_labels", lambda a: a.__setitem__(0, 10), r"'test_labels' must be integer \(n,\) in \[0, "
                                                                  r"classes\).*got values in \[0, 10\]"),
                  ("train_counts", lambda a: a.__setitem__(0, -1), r"'train_counts' must be integer \(classes,\) >= 0")]
    for key, damage, message in bad_values:
        arrays = {k: v.copy() for k, v in good.items()}
        damage(arrays[key])
        np.savez(run / "features.npz", **arrays)
        code, _, err = run_main(["decoupled", run, "--epochs", "1"], capsys)
        assert code == 2 and re.search(rf"lade: '{re.escape(str(run / 'features.npz'))}': {message}", err), err
    for key, value in (("train_features", good["train_features"].astype(np.float64)),
                       ("train_labels", good["train_labels"][1:]), ("fc_bias", good["fc_bias"][:3])):
        np.savez(run / "features.npz", **dict(good, **{key: value}))
        code, _, err = run_main(["decoupled", run, "--epochs", "1"], capsys)
        assert code == 2 and f"features.npz': '{key}' must be" in err, err


def test_decoupled_without_held_out_set_does_not_choose_tau_on_training_features(tiny_root, tmp_path,  # noqa: F811
                                                                                 capsys):
    """Issue 28: without a held-out set tau was chosen on the training features, which the backbone has
    fitted (tau-norm 23.3 % against cRT's 31.3 %); now tau = 1. LADE re-training runs as many samples
    of the smallest class as cRT's epochs, and says so."""
    run = tmp_path / "run"
    assert main([str(a) for a in train_args(tiny_root, run, "optim.epochs=1", "data.calib_fraction=0",
                                            "--no-report")]) == 0
    code, _, err = run_main(["decoupled", run, "--epochs", "2"], capsys)
    assert code == 0, err
    results = json.loads((run / "decoupled" / "results.json").read_text())
    notes = {r["raw_method"]: r["notes"] for r in results if "raw_method" in r}
    assert "tau = 1 (unit-norm rows): no held-out set to choose it on" in notes["tau-norm"]
    counts = np.load(run / "train_counts.npy")
    epochs = 2 * int(np.ceil(counts.mean() / counts.min()))
    assert any(n.startswith(f"{epochs} epochs of instance sampling (cRT: 2 class-balanced)")
               for n in notes["LADE re-trained"])
    info = json.loads((run / "decoupled" / "classifiers.json").read_text())
    assert info["tau-norm"] == {"method": "tau-normalisation", "rule": "tau = 1, no held-out set"}


@pytest.fixture(scope="module")
def jpeg_root(data_dir, tmp_path_factory):
    """A small CIFAR-10 JPEG list-file dataset (20 train and 4 test images per class) taken from the
    shared archive, and the same images as class folders."""
    import tarfile
    root = tmp_path_factory.mktemp("jpeg")
    with tarfile.open(data_dir / "cifar10-jpeg.tar.gz") as tar:
        lists = {s: tar.extractfile(f"cifar10-jpeg/{s}.txt").read().decode().split() for s in ("train", "test")}
        for split, per_class in (("train", 20), ("test", 4)):
            pairs = list(zip(lists[split][::2], map(int, lists[split][1::2])))
            keep = [(p, y) for c in range(10) for p, y in [q for q in pairs if q[1] == c][:per_class]]
            tar.extractall(root, members=[tar.getmember(f"cifar10-jpeg/{p}") for p, _ in keep], filter="data")
            (root / "cifar10-jpeg" / f"{split}.txt").write_text("".join(f"{p} {y}\n" for p, y in keep))
    return root


JPEG_TINY = ["optim.epochs=1", "optim.batch_size=16", "optim.warmup_epochs=0", "run.threads=1",
             "run.num_workers=1", "run.eval_every=0", "data.imbalance=10", "data.train_img_max=20", "--quiet"]


def test_listfile_and_imagefolder_runs_from_the_cli(jpeg_root, tmp_path, capsys):
    # list files at 64 px through the ResNet-32 with a stride-2 stem
    out = tmp_path / "list"
    code, text, err = run_main(["train", "--config", "cifar10_jpeg_lt_100_lade", "--out", out, "--data-root",
                                jpeg_root, *JPEG_TINY, "data.resolution=64", "model.stem_stride=2"], capsys)
    assert code == 0, err
    assert "## Shifted tests" in text and "LADE" in text
    counts = np.load(out / "train_counts.npy")
    assert counts[0] == 20 and counts[-1] == 2 and np.load(out / "test_logits.npy").shape == (40, 10)
    # the decoupled stage on the list-file run: features of the JPEGs, as the run evaluated them
    code, _, err = run_main(["features", out], capsys)
    assert code == 0, err
    with np.load(out / "features.npz") as z:
        a = {k: z[k] for k in z.keys()}
    np.testing.assert_allclose(a["test_features"] @ a["fc_weight"].T + a["fc_bias"], np.load(out / "test_logits.npy"),
                               rtol=1e-4, atol=1e-4)
    assert a["train_features"].shape == (counts.sum(), 128) and np.array_equal(np.bincount(a["train_labels"]), counts)
    code, text, err = run_main(["decoupled", out, "--epochs", "2"], capsys)
    assert code == 0, err
    assert "cRT (+log p_t)" in text and "tau-norm (+log p_t)" in text
    # class folders through the ResNet-18 with torchvision's stem
    folder = tmp_path / "folder"
    code, text, err = run_main(["train", "--config", "cifar10_jpeg_lt_100_lade", "--out", folder, "--data-root",
                                jpeg_root, "data.dataset=imagefolder", "data.train=cifar10-jpeg/train",
                                "data.test=cifar10-jpeg/test", *JPEG_TINY, "model.arch=resnet18",
                                "model.stem_stride=4"], capsys)
    assert code == 0, err
    assert np.array_equal(np.load(folder / "train_counts.npy"), counts)
    with np.load(folder / "checkpoint.npz") as z:
        assert z["params"].size == lade.ResNet18(10).num_params


def test_a_fifo_in_the_training_list_ends_lade_train_at_once_naming_it(jpeg_root, tmp_path):
    """Issue 28: `lade train` blocked for good in open() on a FIFO entry, deaf to Ctrl-C. A child
    process with a timeout, so that a regression fails instead of hanging the test run."""
    lists = jpeg_root / "cifar10-jpeg"
    os.mkfifo(tmp_path / "fifo.jpg")
    lines = (lists / "train.txt").read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines[:3] + [f"{tmp_path / 'fifo.jpg'} 0"] + lines[4:]) + "\n")
    done = subprocess.run([sys.executable, "-m", "lade", "train", "--config", "cifar10_jpeg_lt_100_lade",
                           "--data-root", str(jpeg_root), *JPEG_TINY, f"data.image_root={lists}",
                           "data.lt_subset=false", "--out", str(tmp_path / "run"), f"data.train={bad}"],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 2, done.stderr
    assert "bad.txt line 4" in done.stderr and "fifo.jpg' is a FIFO, not a regular file" in done.stderr


def test_listfile_errors_name_the_list_line_and_the_class(jpeg_root, tmp_path, capsys):
    lists = jpeg_root / "cifar10-jpeg"
    lines = (lists / "train.txt").read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines[:3] + ["train/nope/0000.jpg 0"] + lines[4:]) + "\n")
    args = ["train", "--config", "cifar10_jpeg_lt_100_lade", "--data-root", jpeg_root, *JPEG_TINY,
            f"data.image_root={lists}", "data.lt_subset=false"]
    code, _, err = run_main([*args, "--out", tmp_path / "a", f"data.train={bad}"], capsys)
    assert code == 2 and "bad.txt" in err and "line 4" in err, err
    missing = tmp_path / "missing.txt"
    missing.write_text("\n".join(ln for ln in lines if not ln.endswith(" 3")) + "\n")
    code, _, err = run_main([*args, "--out", tmp_path / "b", f"data.train={missing}"], capsys)
    assert code == 2 and "class 3 has no image in the training data" in err, err
    few = tmp_path / "few.txt"
    few.write_text("\n".join(ln for ln in lines if not ln.endswith(" 9")) + "\n")
    code, _, err = run_main([*args, "--out", tmp_path / "c", f"data.train={few}"], capsys)
    assert code == 0 and "classes not in the training data (9)" in err, err
