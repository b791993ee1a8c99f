"""The experiment command line: config validation, bad input, tiny real runs, resume after a
kill, evaluation reports and sweeps. Runs use a tiny CIFAR-10-format data set cut from the real
CIFAR-100 archive (10 classes, 30 train / 10 test images each), so a run takes seconds."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT
from lade.app import config, evaluation, runs
from lade.app.cli import main

# 78 training images in batches of 16. lr 0.005 at batch 16 is the paper's 0.2 at batch 256 scaled down
# 2.5x further for the missing warmup; at 0.05 the tiny run diverged (logits of 10^4, chance accuracy).
TINY = ["data.train_img_max=20", "optim.batch_size=16", "optim.warmup_epochs=0", "run.threads=1",
        "run.num_workers=1", "run.eval_every=0", "optim.lr=0.005"]
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="session")
def tiny_root(cifar100, tmp_path_factory):
    """A CIFAR-10 binary folder (5 train batches + test batch) of CIFAR-100 classes 0..9."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "cifar-10-batches-bin"
    folder.mkdir()

    def records(split, per_class):
        images, fine, _ = cifar100[split]
        idx = np.concatenate([np.flatnonzero(fine == c)[:per_class] for c in range(10)])
        rec = np.empty((len(idx), 1 + 3072), np.uint8)
        rec[:, 0] = fine[idx]
        rec[:, 1:] = images[idx].reshape(len(idx), -1)
        return rec

    train = records("train", 30)
    np.random.default_rng(0).shuffle(train)
    for i, part in enumerate(np.array_split(train, 5)):
        part.tofile(folder / f"data_batch_{i + 1}.bin")
    records("test", 10).tofile(folder / "test_batch.bin")
    return root


def run_main(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def train_args(tiny_root, out, *extra, config_name="cifar10_lt_10_lade"):
    return ["train", "--config", config_name, "--out", out, "--data-root", tiny_root, "--quiet", *TINY, *extra]


# ------------------------------------------------------------------------------ configs

def test_every_shipped_config_validates_and_follows_the_paper_recipe():
    names = config.builtin_names()
    for ds in ("cifar10", "cifar100"):
        for imb in (100, 50, 10):
            for m in ("ce", "balanced_softmax", "lade", "logit_adjusted", "focal", "class_balanced", "ldam_drw"):
                assert f"{ds}_lt_{imb}_{m}" in names
    for name in names:
        cfg = config.load(name)
        assert cfg["name"] == name
        raw = yaml.safe_load((config.CONFIG_DIR / f"{name}.yaml").read_text())
        # a config file records everything: every key of the schema is written out
        assert set(config.flatten(raw)) == set(config.flatten(cfg)), name
        if not name.endswith("_quick"):
            o = cfg["optim"]
            assert (o["epochs"], o["batch_size"], o["lr"], o["weight_decay"], o["warmup_epochs"], o["milestones"],
                    o["lr_factor"]) == (200, 256, 0.2, 5e-4, 5, [120, 160], 0.01)
    lade100 = config.load("cifar100_lt_100_lade")["loss"]
    assert (lade100["alpha"], lade100["remine_lambda"]) == (0.1, 0.01)


@pytest.mark.parametrize("raw, key", [
    ({"optimizer": {}}, "optimizer"),
    ({"optim": {"learning_rate": 0.1}}, "optim.learning_rate"),
    ({"loss": {"name": "softmax_ce", "alpha": 0.1}}, "loss.alpha"),
    ({"optim": {"lr": "fast"}}, "optim.lr"),
    ({"optim": {"epochs": 1.5}}, "optim.epochs"),
    ({"optim": {"epochs": True}}, "optim.epochs"),
    ({"optim": {"nesterov": "yes"}}, "optim.nesterov"),
    ({"optim": {"milestones": [160, 120]}}, "optim.milestones"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ({"data": {"imbalance": 0.5}}, "data.imbalance"),
    ({"loss": {"name": "lade", "alpha": -1}}, "loss.alpha"),
    ({"run": 3}, "run"),
])
def test_bad_config_values_are_rejected_naming_the_key(raw, key):
    with pytest.raises(config.ConfigError, match=f"'{key}'"):
        config.validate(raw)


def test_bad_key_in_a_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\noptim:\n  lr: 0.1\n  epoch: 3\n")
    with pytest.raises(config.ConfigError, match=r"'optim\.epoch'.*bad\.yaml"):
        config.load(path)


def test_overrides_are_applied_explicitly_and_reported():
    cfg = config.load("cifar100_lt_100_lade")
    new, changes = config.apply_overrides(cfg, ["optim.epochs=30", "loss.alpha=0.05", "optim.milestones=[20, 25]"])
    assert changes == [("optim.epochs", 200, 30), ("loss.alpha", 0.1, 0.05), ("optim.milestones", [120, 160], [20, 25])]
    assert new["optim"]["epochs"] == 30 and new["loss"]["alpha"] == 0.05 and new["optim"]["milestones"] == [20, 25]
    assert cfg["optim"]["epochs"] == 200  # the original is untouched
    # nothing else changed: the official code's command-line defaults silently replaced alpha, lr, imbalance
    untouched = {k: v for k, v in config.flatten(new).items() if k not in ("optim.epochs", "loss.alpha",
                                                                           "optim.milestones")}
    assert untouched == {k: v for k, v in config.flatten(cfg).items() if k in untouched}
    # switching the loss drops options the new loss does not have
    ce, _ = config.apply_overrides(cfg, ["loss.name=softmax_ce"])
    assert ce["loss"] == {"name": "softmax_ce"}
    for bad, key in (("optim.lrr=1", "optim.lrr"), ("lr=0.1", "lr"), ("optim.lr=abc", "optim.lr"),
                     ("loss.alpha.x=1", "loss.alpha.x")):
        with pytest.raises(config.ConfigError, match=f"'{key}'"):
            config.apply_overrides(cfg, [bad])
    with pytest.raises(config.ConfigError, match="key=value"):
        config.apply_overrides(cfg, ["optim.lr"])


def test_bad_input_is_rejected_before_training(tiny_root, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(train_args(tiny_root, out, "optim.momentumm=0.5"), capsys)
    assert code == 2 and "'optim.momentumm'" in err and not out.exists()
    code, _, err = run_main(train_args(tiny_root, out, "optim.epochs=two"), capsys)
    assert code == 2 and "'optim.epochs'" in err and not out.exists()
    missing = tmp_path / "no_such_data"
    code, _, err = run_main(["train", "--config", "cifar10_lt_10_lade", "--out", out, "--data-root", missing], capsys)
    assert code == 2 and str(missing) in err and not out.exists()
    code, _, err = run_main(["train", "--config", "no_such_config", "--out", out], capsys)
    assert code == 2 and "no_such_config" in err and not out.exists()
    # a folder that is not a lade run is never written into
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run_main(train_args(tiny_root, tmp_path / "other"), capsys)
    assert code == 2 and "no config.yaml" in err
    assert os.listdir(tmp_path / "other") == ["notes.txt"]


# ---------------------------------------------------------------------------- tiny runs

def _final_state(run_dir):
    with np.load(run_dir / runs.CHECKPOINT) as ck:
        return {k: ck[k].copy() for k in ("params", "buffers", "velocity", "steps", "epoch")}


def _assert_same_state(a, b):
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_run(tiny_root, tmp_path_factory):
    """An uninterrupted 3-epoch LADE run (through the command line, in-process)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main([str(a) for a in train_args(tiny_root, out, "optim.epochs=3")]) == 0
    return out


def test_a_run_folder_holds_everything_evaluation_needs(reference_run):
    run = reference_run
    for name in ("config.yaml", "run.json", "metrics.jsonl", "checkpoint.npz", "train_counts.npy", "test_logits.npy",
                 "test_labels.npy", "calib_logits.npy", "calib_labels.npy", "final.json", "report.md",
                 "results.json", "per_class_accuracy.png", "shifted_tests.png", "reliability.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp"))
    cfg = config.load(run / "config.yaml")
    assert cfg["optim"]["epochs"] == 3 and cfg["data"]["train_img_max"] == 20
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in rows)
    assert all(0 < r["step_seconds"] <= r["seconds"] for r in rows)  # where an epoch's time goes
    # the tiny run trains: its loss goes down (2.15 -> 2.02 when written) rather than blowing up
    assert rows[-1]["loss"] < rows[0]["loss"], [r["loss"] for r in rows]
    overrides = json.loads((run / "run.json").read_text())["sessions"][0]["overrides"]
    assert {"key": "optim.epochs", "old": 200, "new": 3} in overrides
    counts = np.load(run / "train_counts.npy")
    assert counts.tolist() == [int(20 * 0.1 ** (c / 9)) for c in range(10)]  # spec §3.1 with img_max 20
    logits, labels = np.load(run / "test_logits.npy"), np.load(run / "test_labels.npy")
    assert logits.shape == (100, 10) and logits.dtype == np.float32 and np.bincount(labels).tolist() == [10] * 10
    # logits of a model that trained: finite and of sane size (the diverged fixture reached 10^4)
    assert np.all(np.isfinite(logits)) and np.abs(logits).max() < 100
    # The saved raw logits are the final weights' eval-mode logits. Recomputed as the run computed them (same
    # batch size, thread count and kernel variant), lade.predict gives the same bits: the summation order is
    # a function of these three, nothing else.
    import lade
    net = lade.ResNet32(10, "lade")
    ck = _final_state(run)
    net.params[...] = ck["params"]
    net.buffers[...] = ck["buffers"]
    images = lade.data.augment(np.ascontiguousarray(lade.data.load_cifar(_tiny_source(run), "test")[0]),
                               lade.data.CifarTest())
    cfg_run = cfg["run"]
    threads = lade.get_num_threads()
    lade.set_num_threads(cfg_run["threads"])
    try:
        again = lade.predict(net, images, min(cfg_run["eval_batch_size"], len(images)))
        assert np.array_equal(again, logits)
        # Another batch size may sum in another order (GEMM blocking, vector width): the same values to float32
        # rounding relative to the logits' magnitude, not to an absolute 1e-4 below float32 resolution.
        other = lade.predict(net, images, 30)
    finally:
        lade.set_num_threads(threads)
    scale = np.abs(logits).max()
    np.testing.assert_allclose(other, logits, rtol=0, atol=1e-5 * scale)


def _tiny_source(run):
    return json.loads((run / "run.json").read_text())["sessions"][0]["data_root"] + "/cifar-10-batches-bin"


def test_a_run_folder_with_another_config_is_refused(tiny_root, reference_run, capsys):
    code, _, err = run_main(train_args(tiny_root, reference_run, "optim.epochs=4"), capsys)
    assert code == 2 and "optim.epochs" in err and "--resume" in err
    code, _, err = run_main(train_args(tiny_root, reference_run, "optim.epochs=4", "--resume"), capsys)
    assert code == 2 and "optim.epochs" in err
    code, _, err = run_main(train_args(tiny_root, reference_run, "optim.epochs=3"), capsys)
    assert code == 2 and "already holds a run" in err
    # resuming a finished run with the same config does nothing
    before = (reference_run / "checkpoint.npz").stat().st_mtime_ns
    code, _, err = run_main(train_args(tiny_root, reference_run, "optim.epochs=3", "--resume", "--no-report"), capsys)
    assert code == 0 and "already finished" in err
    assert (reference_run / "checkpoint.npz").stat().st_mtime_ns == before


def test_stop_and_resume_gives_the_same_weights(tiny_root, reference_run, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(train_args(tiny_root, out, "optim.epochs=3", "--stop-after", 1), capsys)
    assert code == 0 and "continue with --resume" in err
    assert runs.run_status(out) == "running" and _final_state(out)["epoch"] == 1
    # the run folder's own config is enough to resume it
    code, _, err = run_main(["train", "--out", out, "--resume", "--data-root", tiny_root, "--quiet"], capsys)
    assert code == 0 and "resuming" in err
    _assert_same_state(_final_state(out), _final_state(reference_run))
    assert np.array_equal(np.load(out / "test_logits.npy"), np.load(reference_run / "test_logits.npy"))
    assert [json.loads(ln)["epoch"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def _start_and_kill(cmd, out, epoch=1):
    """Starts a training process, SIGKILLs it right after its first checkpoint of at least `epoch` finished
    epochs (0: the one written before the first epoch), and returns the number of epochs the checkpoint holds."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / runs.CHECKPOINT).exists() or _final_state(out)["epoch"] < epoch:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return int(_final_state(out)["epoch"])


def test_kill_9_and_resume_gives_the_same_weights(tiny_root, reference_run, tmp_path):
    # On a loaded machine the process may get through more epochs before the kill lands; a
    # kill after the last epoch proves nothing, so that attempt is repeated in a fresh folder.
    for attempt in range(3):
        out = tmp_path / f"run{attempt}"
        cmd = [sys.executable, "-m", "lade"] + [str(a) for a in train_args(tiny_root, out, "optim.epochs=3")]
        killed_at = _start_and_kill(cmd, out)
        if killed_at < 3:
            break
    assert runs.run_status(out) == "running" and 1 <= killed_at < 3
    res = subprocess.run(cmd + ["--resume", "--no-report"], env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"after epoch {killed_at}" in res.stderr
    _assert_same_state(_final_state(out), _final_state(reference_run))


def test_kill_9_after_the_epoch_0_checkpoint_and_resume_gives_the_same_weights(tiny_root, reference_run, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lade"] + [str(a) for a in train_args(tiny_root, out, "optim.epochs=3")]
    killed_at = _start_and_kill(cmd, out, epoch=0)
    assert runs.run_status(out) == "running" and killed_at < 3
    res = subprocess.run(cmd + ["--resume", "--no-report"], env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"after epoch {killed_at}" in res.stderr
    _assert_same_state(_final_state(out), _final_state(reference_run))


def test_evaluate_and_compare_from_saved_logits(reference_run, tmp_path, capsys):
    code, out, err = run_main(["evaluate", reference_run], capsys)
    assert code == 0 and "## Shifted tests" in out and "LADE" in out
    results = json.loads((reference_run / "results.json").read_text())
    logits, labels = np.load(reference_run / "test_logits.npy"), np.load(reference_run / "test_labels.npy")
    # LADE at a uniform target predicts argmax f
    assert results["methods"][0]["uniform"]["top1"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    code, out, _ = run_main(["evaluate", reference_run, reference_run, "--out", tmp_path / "cmp"], capsys)
    assert code == 0 and (tmp_path / "cmp" / "comparison.md").is_file()
    assert (tmp_path / "cmp" / "comparison_shifted_tests.png").stat().st_size > 1000
    code, _, err = run_main(["evaluate", tmp_path], capsys)
    assert code == 2 and "not a finished run" in err


def test_compare_with_stop_after_advances_every_run_in_turn(data_dir, tmp_path, capsys):
    """Long comparisons are run in slices: each call moves both runs on by N epochs, and the
    report appears once both are finished."""
    out = tmp_path / "cmp"
    tiny = [o for o in TINY if not o.startswith("data.train_img_max")] + [
        "data.train_img_max=10", "data.imbalance=10", "data.test_per_class=2", "data.calib_test_per_class=2",
        "optim.epochs=2", "optim.milestones=[1]"]
    args = ["compare", "--quick", "--out", out, "--data-root", data_dir, "--quiet", "--stop-after", 1, *tiny]
    code, _, err = run_main(args, capsys)
    assert code == 0 and "not finished" in err
    run_dirs = [out / "cifar100_lt_100_ce_quick", out / "cifar100_lt_100_lade_quick"]
    assert [_final_state(r)["epoch"] for r in run_dirs] == [1, 1]
    assert not (out / "comparison.md").exists()
    code, text, err = run_main(args, capsys)
    assert code == 0 and all(runs.run_status(r) == "finished" for r in run_dirs)
    assert (out / "comparison.md").is_file() and "PC Softmax" in text and "LADE" in text
    # the console gets the headline: the summary table, the paired difference and where the report is
    assert len(text.splitlines()) <= 40 and "## Summary" in text and "## Uniform test" not in text, text
    assert "- PC Softmax (cifar100_lt_100_ce_quick) − LADE (cifar100_lt_100_lade_quick): " in text
    assert text.rstrip().endswith(f"{out / 'comparison.md'}")


def fake_run(path, loss_name, logits, labels, counts, calib=None, overrides=()):
    """A finished run folder holding only what reports read: config, counts, logits and labels."""
    path.mkdir()
    cfg, _ = config.apply_overrides(config.load("cifar10_lt_100_ce"), [f"loss.name={loss_name}", *overrides])
    (path / "config.yaml").write_text(config.dump(cfg))
    np.save(path / "train_counts.npy", counts)
    np.save(path / "test_logits.npy", logits)
    np.save(path / "test_labels.npy", labels)
    if calib is not None:
        np.save(path / "calib_logits.npy", calib[0])
        np.save(path / "calib_labels.npy", calib[1])
    (path / "final.json").write_text(json.dumps({"train_images": 1, "test_images": len(labels),
                                                 "calib_images": 0 if calib is None else 1, "train_seconds": 0.0}))


def test_shifted_table_matches_a_numpy_reference(tmp_path):
    """Synthetic logits of a model that learned the training prior: the report's numbers must
    equal argmax of the spec §2.1 formulas computed here with NumPy."""
    rng = np.random.default_rng(3)
    counts = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    log_ps = np.log(counts / counts.sum())
    labels = np.repeat(np.arange(10), 100)
    calib_labels = np.concatenate([np.full(max(1, c // 20), k) for k, c in enumerate(counts)])

    def logits_for(y):
        f = rng.normal(size=(len(y), 10)) * 1.5 + log_ps
        f[np.arange(len(y)), y] += 2.0
        return f.astype(np.float32)

    f = logits_for(labels)
    fake_run(tmp_path / "ce", "softmax_ce", f, labels, counts, (logits_for(calib_labels), calib_labels))
    res = evaluation.evaluate_run(tmp_path / "ce")
    acc = res["shift"]["accuracy"]
    for i, (direction, ratio) in enumerate(__import__("lade").sampling.SHIFT_SETTINGS):
        # spec §2.3 by hand: rank by prior, int(100 * (1/r)^(k/9)) (reversed for backward), first k per class
        k = np.arange(10)
        n = np.full(10, 100) if direction == "uniform" else (100 * (1.0 / ratio) ** (k / 9)).astype(int)
        if direction == "backward":
            n = n[::-1]
        idx = np.concatenate([np.flatnonzero(labels == c)[:n[c]] for c in range(10)])
        p_t = n / n.sum()
        pc = np.argmax(f[idx] - log_ps + np.log(p_t), 1) == labels[idx]
        raw = np.argmax(f[idx], 1) == labels[idx]
        assert acc["oracle"][i] == pytest.approx(pc.mean(), abs=1e-9), (direction, ratio)
        assert acc["none"][i] == pytest.approx(raw.mean(), abs=1e-9), (direction, ratio)
    # PC with the true prior beats plain softmax on the tail-heavy sets, and EM gets close to it
    assert acc["oracle"][-1] > acc["none"][-1] + 0.2
    assert acc["em"][-1] > acc["none"][-1] + 0.1
    u = res["methods"][0]["uniform"]
    assert u["top1"] == pytest.approx(np.mean(np.argmax(f - log_ps, 1) == labels))
    p = np.exp(f - log_ps - (f - log_ps).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert u["nll"] == pytest.approx(np.mean(-np.log(p[np.arange(1000), labels])), rel=1e-4)
    assert u["brier"] == pytest.approx(np.mean(((p - np.eye(10)[labels]) ** 2).sum(1)), rel=1e-4)


# -------------------------------------------------------------------------------- sweeps

def test_sweep_runs_each_point_once_and_collects_a_table(tiny_root, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": "cifar10_lt_10_lade", "out": str(tmp_path / "sweep"),
        "fixed": {k: yaml.safe_load(v) for k, v in (item.split("=") for item in TINY)} | {"optim.epochs": 1},
        "grid": {"loss.alpha": [0.0, 0.1]}}))
    cmd = [sys.executable, "-m", "lade", "sweep", str(grid), "--data-root", str(tiny_root)]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "2 runs, 0 finished, 2 to do" in res.stderr
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert table.count("| finished |") == 2
    assert res.stdout.strip() == table.strip()
    # rerunning skips the finished runs
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0 and "2 runs, 2 finished, 0 to do" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "cifar10_lt_10_lade", "grid": {"loss.alfa": [1]}}))
    res = subprocess.run([sys.executable, "-m", "lade", "sweep", str(bad)], env=ENV, capture_output=True, text=True)
    assert res.returncode == 2 and "'loss.alfa'" in res.stderr


def test_progress_off_a_terminal_is_one_line_per_epoch():
    """A log file or a pipe gets a line at the end of each epoch, not one per tenth of it (the quick
    preset printed 80 of them before its 21-line summary)."""
    import io
    from lade.app.training import Progress

    stream = io.StringIO()
    bar = Progress(3, 84, stream=stream)
    for epoch in (1, 2, 3):
        for batch in range(1, 85):
            bar.update(epoch, batch, 2.5, 0.25, 100.0, (3 - epoch) * 84 * 128 + (84 - batch) * 128)
    lines = stream.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"] and all(" 84/84 " in ln for ln in lines)
