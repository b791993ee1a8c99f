"""`lade sweep --backend ray`: a tiny grid of two trials on a local Ray with 2 CPUs (one Ray session for
the module: its start-up is the slow part). Trials train the tiny CIFAR-10-format data of test_cli."""
import csv
import json
import os

import numpy as np
import pytest
import ray
import yaml

from conftest import REPO_ROOT
from test_cli import TINY, tiny_root  # noqa: F401  (the fixture)
from lade.app import sweep


@pytest.fixture(scope="module")
def local_ray():
    # the trial processes import this checkout of lade; PYTHONPATH is restored afterwards, since a leaked
    # one makes later subprocesses (test_wheel's fresh venv) see this checkout's lade as installed
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), before) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def tune_results(out):
    """{trial's run folder name: [reported rows]} from Tune's own result files."""
    found = {}
    for root, _, files in os.walk(out / "ray"):
        if "result.json" in files:
            rows = [json.loads(line) for line in open(os.path.join(root, "result.json")) if line.strip()]
            params = json.load(open(os.path.join(root, "params.json")))
            found[os.path.basename(params["trial"]["run_dir"])] = rows
    return found


def test_ray_sweep_stops_the_worse_trial_early_and_a_rerun_skips_both(tiny_root, tmp_path, local_ray):  # noqa: F811
    out = tmp_path / "sweep"
    fixed = dict(o.split("=") for o in TINY)
    fixed = {k: yaml.safe_load(v) for k, v in fixed.items()}
    # both trials ask for 2 CPUs (run.threads) of Ray's 2, so they run one after the other in grid order:
    # the first sets ASHA's bar at epoch 1, the second (learning nothing at lr 1e-6) falls below it
    fixed.update({"optim.epochs": 2, "run.threads": 2, "optim.lr": 0.005})
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": "cifar10_lt_10_lade", "out": str(out), "fixed": fixed,
        "grid": {"optim.lr": [0.005, 1e-6]},
        "ray": {"metric": "loss", "mode": "min", "grace_period": 1, "reduction_factor": 2}}))
    text, failed = sweep.run(grid, data_root=tiny_root, backend="ray")
    assert failed == []
    good, bad = out / "optim.lr=0.005", out / "optim.lr=1e-06"
    assert (good / "final.json").is_file() and not (bad / "final.json").is_file()
    assert json.loads((out / "ray_stopped.json").read_text()) == {bad.name: 1}
    with open(out / "sweep.csv") as f:
        rows = {r["optim.lr"]: r for r in csv.DictReader(f)}
    assert rows["0.005"]["status"] == "finished" and rows["0.005"]["uniform top-1"]
    assert rows["1e-06"]["status"] == "stopped early (epoch 1)"
    assert "stopped early (epoch 1)" in text and "| optim.lr | status | uniform top-1" in text

    # Tune saw every epoch of each trial, as the run folders logged them, with 2 CPUs per trial
    reported = tune_results(out)
    for run_dir, epochs in ((good, [1, 2]), (bad, [1])):
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rows = reported[run_dir.name]
        assert [r["epoch"] for r in rows] == epochs == [r["epoch"] for r in logged]
        assert [r["loss"] for r in rows] == [r["loss"] for r in logged]
        assert all(r["cpus"] == 2 for r in rows)
    assert reported[bad.name][0]["loss"] > reported[good.name][0]["loss"]

    # a rerun trains nothing: both trials are done (one finished, one stopped), no Tune run starts
    stamps = {p: p.stat().st_mtime_ns for p in (good / "checkpoint.npz", bad / "checkpoint.npz")}
    trials_before = len(reported)
    text2, failed2 = sweep.run(grid, data_root=tiny_root, backend="ray")
    assert failed2 == [] and text2 == text
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert len(tune_results(out)) == trials_before


def test_hyperband_pauses_a_trial_and_it_resumes_exactly(tiny_root, tmp_path, local_ray):  # noqa: F811
    """Synchronous HyperBand at max_t = 2 epochs, reduction factor 2, makes two brackets of two trials: the
    first runs both to the end; the second PAUSES its first trial at epoch 1 until the other gets there,
    stops the worse and resumes the better from its checkpoints in a new trial process. The resumed trial
    must end exactly as an uninterrupted `lade train` of the same config."""
    from lade.app import config as config_mod, training

    out = tmp_path / "sweep"
    fixed = {k: yaml.safe_load(v) for k, v in (o.split("=") for o in TINY)}
    fixed.update({"optim.epochs": 2, "run.threads": 2})  # 2 of Ray's 2 CPUs: one trial at a time, in grid order
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "base": "cifar10_lt_10_lade", "out": str(out), "fixed": fixed,
        "grid": {"model.seed": [1, 2], "optim.lr": [0.005, 1e-6]},  # trials in this order, two per bracket
        "ray": {"scheduler": "hyperband", "metric": "loss", "mode": "min", "reduction_factor": 2}}))
    text, failed = sweep.run(grid, data_root=tiny_root, backend="ray")
    assert failed == []
    paused, stopped = out / "model.seed=2,optim.lr=0.005", out / "model.seed=2,optim.lr=1e-06"
    assert json.loads((out / "ray_stopped.json").read_text()) == {stopped.name: 1}
    for name in ("model.seed=1,optim.lr=0.005", "model.seed=1,optim.lr=1e-06", paused.name):
        assert (out / name / "final.json").is_file(), name

    # the pause and the restore happened: Tune restarted the trial after epoch 1, and the trial says so
    rows = tune_results(out)[paused.name]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["iterations_since_restore"] for r in rows] == [1, 1]
    assert "lade sweep: trial restored by Tune after epoch 1" in (out / "logs" / f"{paused.name}.log").read_text()

    # and the resumed trial ends exactly as an uninterrupted run
    cfg, changes = config_mod.apply_overrides(config_mod.load("cifar10_lt_10_lade"),
                                              [f"{k}={v}" for k, v in fixed.items()] + ["model.seed=2",
                                                                                        "optim.lr=0.005"])
    straight = tmp_path / "straight"
    assert training.train(cfg, straight, overrides=changes, data_root=tiny_root, progress=False) == "finished"
    with np.load(straight / "checkpoint.npz") as a, np.load(paused / "checkpoint.npz") as b:
        for name in ("params", "buffers", "velocity", "steps", "epoch"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(np.load(straight / "test_logits.npy"), np.load(paused / "test_logits.npy"))
    metrics = [[{k: v for k, v in json.loads(line).items() if k in ("epoch", "loss", "train_acc", "lr")}
                for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, paused)]
    assert metrics[0] == metrics[1] and len(metrics[0]) == 2


def test_ray_settings_are_checked_before_anything_runs(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": "cifar10_lt_10_lade", "out": str(tmp_path / "s"),
                                    "grid": {"optim.lr": [0.1]}, "ray": {"mode": "biggest"}}))
    with pytest.raises(ValueError, match="key 'ray.mode' has a bad value 'biggest'"):
        sweep.run(grid, backend="ray")
    with pytest.raises(ValueError, match="--address needs --backend ray"):
        sweep.run(grid, address="auto")
    assert not (tmp_path / "s").exists()


def test_sampled_configurations_are_drawn_once_from_the_seed_and_combined_with_the_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    body = {"base": "cifar10_lt_10_lade", "out": str(tmp_path / "s"), "grid": {"run.seed": [1, 2]},
            "sample": {"count": 3, "seed": 4, "space": {"optim.lr": {"loguniform": [0.01, 0.4]},
                                                         "loss.alpha": {"uniform": [0.0, 0.5]},
                                                         "loss.form": {"choice": ["official", "paper"]}}}}
    grid.write_text(yaml.safe_dump(body, sort_keys=False))
    runs = sweep.plan(sweep.load_grid(grid))
    assert len(runs) == 6 and runs == sweep.plan(sweep.load_grid(grid))
    points = [point for _, _, point in runs]
    assert [p["run.seed"] for p in points] == [1, 1, 1, 2, 2, 2]
    assert [dict(p, **{"run.seed": 2}) for p in points[:3]] == points[3:]  # the same draws for each grid point
    for p in points:
        assert 0.01 <= p["optim.lr"] <= 0.4 and 0.0 <= p["loss.alpha"] <= 0.5
        assert p["loss.form"] in ("official", "paper")
        assert p["optim.lr"] == float(f"{p['optim.lr']:.4g}")
    assert len({p["optim.lr"] for p in points}) == 3  # three draws, each with both grid seeds
    run_dir, overrides, point = runs[0]
    assert f"optim.lr={point['optim.lr']}" in overrides and run_dir.name.startswith("run.seed=1,optim.lr=")
    assert sweep.point_keys(sweep.load_grid(grid)) == ["run.seed", "optim.lr", "loss.alpha", "loss.form"]
    body["sample"]["space"]["optim.lr"] = {"loguniform": [0.0, 0.4]}
    grid.write_text(yaml.safe_dump(body, sort_keys=False))
    with pytest.raises(ValueError, match=r"sample.space.optim.lr.loguniform' has bad bounds \[0.0, 0.4\]"):
        sweep.load_grid(grid)
    body["sample"]["space"] = {"run.seed": {"choice": [3]}}
    grid.write_text(yaml.safe_dump(body, sort_keys=False))
    with pytest.raises(ValueError, match="run.seed is both in 'grid' and in 'sample.space'"):
        sweep.load_grid(grid)
