"""Hyper-parameter sweeps as independent, restartable training processes.

A sweep file (YAML)::

    base: cifar100_lt_100_lade        # shipped config name, or a YAML path (relative to this file)
    out: runs/sweep_lade              # folder for the runs (relative to the working directory)
    fixed:                            # overrides applied to every run
      optim.epochs: 30
    grid:                             # every combination becomes one run
      loss.alpha: [0.05, 0.1, 0.2]
      loss.remine_lambda: [0.01, 0.1]
      run.seed: [1, 2]
    sample:                           # optional: random configurations, each combined with every grid point
      count: 4                        # (drawn from seed, so a rerun draws the same ones; numbers keep 4
      seed: 0                         # significant digits, as the folder names show them)
      space:
        optim.lr: {loguniform: [0.05, 0.4]}
        optim.weight_decay: {uniform: [1.0e-4, 1.0e-3]}
        loss.form: {choice: [official, paper]}

A sweep needs a grid, a sample, or both.

``python -m lade sweep FILE [--jobs N]`` validates every combination first (a bad key stops the
sweep before anything trains), then runs each one as its own ``python -m lade train --resume``
process into ``out/<key=value,...>``; finished runs are skipped and killed ones continue from
their checkpoint, so rerunning an interrupted sweep only does the missing work. Logs go to
``out/logs/``. At the end every finished run is evaluated and the results are collected in
``out/sweep.md`` and ``out/sweep.csv``.

``--backend ray [--address ADDR]`` runs the points as Ray Tune trials instead, with ASHA (or HyperBand)
early stopping set by an optional ``ray:`` section of the sweep file (lade/app/sweep_ray.py); the run folders,
the skipping of finished runs and the results table are the same.
"""
import csv
import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from lade.app import config as config_mod
from lade.app.datasets import resolve_data_root
from lade.app.runs import run_status

__all__ = ["load_grid", "plan", "run", "collect", "point_keys", "BACKENDS"]

_KEYS = {"base", "out", "fixed", "grid", "sample", "ray"}
_DISTRIBUTIONS = ("uniform", "loguniform", "choice")
BACKENDS = ("local", "ray")


def load_grid(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lade sweep: '{path}' does not exist")
    spec = config_mod.read_yaml(path, "lade sweep") or {}
    if not isinstance(spec, dict):
        raise config_mod.ConfigError(f"lade sweep: '{path}' must hold a mapping")
    for key in spec:
        if key not in _KEYS:
            raise config_mod.ConfigError(f"lade sweep: key '{key}' is not known (known: {', '.join(sorted(_KEYS))})")
    if "base" not in spec or ("grid" not in spec and "sample" not in spec):
        raise config_mod.ConfigError(f"lade sweep: '{path}' needs the key 'base' and 'grid', 'sample' or both")
    grid = spec.get("grid", {})
    if not isinstance(grid, dict) or ("grid" in spec and not grid) or any(
            not isinstance(v, list) or not v for v in grid.values()):
        raise config_mod.ConfigError("lade sweep: key 'grid' must map section.key to non-empty lists of values")
    fixed = spec.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise config_mod.ConfigError("lade sweep: key 'fixed' must map section.key to values")
    base = str(spec["base"])
    if base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str(path.parent / base)
    sample = _check_sample(spec.get("sample"))
    both = sorted(set(grid) & set(sample["space"] if sample else ()))
    if both:
        raise config_mod.ConfigError(f"lade sweep: {', '.join(both)} is both in 'grid' and in 'sample.space'; "
                                     f"keep it in one")
    return {"base": base, "out": Path(spec.get("out") or f"runs/sweep_{path.stem}"), "fixed": fixed, "grid": grid,
            "sample": sample, "ray": spec.get("ray")}


def _check_sample(sample):
    if sample is None:
        return None
    where = "lade sweep: key 'sample"
    if not isinstance(sample, dict) or set(sample) - {"count", "seed", "space"} or "space" not in sample:
        raise config_mod.ConfigError(f"{where}' must map 'count', 'seed' and 'space' to values, got {sample!r}")
    count, seed = sample.get("count", 1), sample.get("seed", 0)
    for key, value in (("count", count), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "count" else 0):
            raise config_mod.ConfigError(f"{where}.{key}' must be a whole number >= {1 if key == 'count' else 0}, "
                                         f"got {value!r}")
    space = sample["space"]
    if not isinstance(space, dict) or not space:
        raise config_mod.ConfigError(f"{where}.space' must map section.key to a distribution")
    for key, dist in space.items():
        if not (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in _DISTRIBUTIONS):
            raise config_mod.ConfigError(f"{where}.space.{key}' must be one of {{uniform: [lo, hi]}}, "
                                         f"{{loguniform: [lo, hi]}}, {{choice: [values]}}, got {dist!r}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            ok = isinstance(args, list) and len(args) > 0
        else:
            ok = (isinstance(args, list) and len(args) == 2 and all(
                isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) and args[0] <= args[1]
                and (kind == "uniform" or args[0] > 0))
        if not ok:
            raise config_mod.ConfigError(f"{where}.space.{key}.{kind}' has bad bounds {args!r} (expected "
                                         f"{'a non-empty list' if kind == 'choice' else '[lo, hi], lo <= hi'}"
                                         f"{', lo > 0' if kind == 'loguniform' else ''})")
    return {"count": count, "seed": seed, "space": space}


def _samples(sample):
    """The sampled points [{key: value}], a pure function of the sample section."""
    if sample is None:
        return [{}]
    rng = np.random.default_rng(sample["seed"])
    points = []
    for _ in range(sample["count"]):
        point = {}
        for key, dist in sample["space"].items():
            kind, args = next(iter(dist.items()))
            if kind == "choice":
                point[key] = args[int(rng.integers(len(args)))]
            else:
                lo, hi = (np.log(args[0]), np.log(args[1])) if kind == "loguniform" else args
                value = rng.uniform(lo, hi)
                point[key] = float(f"{np.exp(value) if kind == 'loguniform' else value:.4g}")
        points.append(point)
    return points


def point_keys(spec):
    """The keys that vary between the runs of a sweep: the grid's, then the sampled ones."""
    return list(spec["grid"]) + list((spec["sample"] or {}).get("space", {}))


def _override(key, value):
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def plan(spec):
    """[(run folder, overrides, {grid key: value})] for every combination, all validated."""
    base = config_mod.load(spec["base"])
    keys = list(spec["grid"])
    runs, folders, configs = [], {}, {}
    for values, sampled in itertools.product(itertools.product(*(spec["grid"][k] for k in keys)),
                                             _samples(spec["sample"])):
        point = dict(zip(keys, values), **sampled)
        overrides = [_override(k, v) for k, v in spec["fixed"].items()] + [_override(k, v) for k, v in point.items()]
        cfg, _ = config_mod.apply_overrides(base, overrides)  # raises ConfigError naming a bad key
        name = ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")
        if name.startswith("."):
            name = "_" + name
        if name in folders:  # e.g. optim.lr: [0.1, 0.10]: two runs would write into one folder
            raise config_mod.ConfigError(f"lade sweep: keys 'grid' / 'sample' give two runs the same folder '{name}' "
                                         f"({folders[name]} and {point}); list each value once")
        folders[name] = point
        same = configs.setdefault(config_mod.dump(cfg), point)
        if same is not point:  # e.g. optim.lr: [1, 1.0]: one config trained twice under two names
            raise config_mod.ConfigError(f"lade sweep: keys 'grid' / 'sample' give the same config twice ({same} and "
                                         f"{point}); list each value once")
        runs.append((spec["out"] / name, overrides, point))
    return runs


def run(grid_path, jobs=1, dry_run=False, data_root=None, backend="local", address=None):
    """Runs the sweep (see the module docstring); returns (the Markdown table, the run folders that failed)."""
    if backend not in BACKENDS:
        raise config_mod.ConfigError(f"lade sweep: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise config_mod.ConfigError("lade sweep: --address needs --backend ray")
    spec = load_grid(grid_path)
    runs = plan(spec)
    resolve_data_root(config_mod.load(spec["base"]), data_root)
    stopped = {}
    if backend == "ray":
        from lade.app import sweep_ray  # Ray is imported only here
        settings = sweep_ray.check_settings(spec["ray"])
        sweep_ray.check_address(address)
        stopped = sweep_ray.stopped_early(spec["out"])
    todo = [r for r in runs if run_status(r[0]) != "finished" and r[0].name not in stopped]
    sys.stderr.write(f"lade sweep: {len(runs)} runs, {len(runs) - len(todo) - len(stopped)} finished, "
                     f"{f'{len(stopped)} stopped early, ' if stopped else ''}{len(todo)} to do\n")
    if dry_run:
        for run_dir, _, _ in runs:
            sys.stderr.write(f"  {run_status(run_dir):9s} {run_dir}\n")
        return "", []
    logs = spec["out"] / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if backend == "ray":
        failed = sweep_ray.run_trials(spec, todo, settings, data_root, address) if todo else []
        return collect(spec, runs, failed, sweep_ray.stopped_early(spec["out"])), failed
    active = []
    failed = []
    pending = list(todo)
    while pending or active:
        while pending and len(active) < max(1, jobs):
            run_dir, overrides, _ = pending.pop(0)
            cmd = [sys.executable, "-m", "lade", "train", "--config", spec["base"], "--out", str(run_dir), "--resume",
                   "--quiet", "--no-report"] + overrides
            if data_root:
                cmd += ["--data-root", str(data_root)]
            log = open(logs / f"{run_dir.name}.log", "a")
            sys.stderr.write(f"lade sweep: start {run_dir}\n")
            active.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), run_dir, log))
        time.sleep(0.5)
        for item in list(active):
            proc, run_dir, log = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                if proc.returncode != 0:
                    failed.append(run_dir)
                sys.stderr.write(f"lade sweep: {'done' if proc.returncode == 0 else 'FAILED'} {run_dir}\n")
    return collect(spec, runs, failed), failed


def collect(spec, runs, failed=(), stopped=None):
    """Evaluates the finished runs and writes sweep.md / sweep.csv; returns the Markdown. ``stopped``:
    {run folder name: epoch} of runs stopped early (Ray backend)."""
    from lade.app import report, report_text
    keys = point_keys(spec)
    header = keys + ["status", "uniform top-1", "many", "medium", "few", "F50 oracle", "B50 oracle", "B50 EM",
                     "ECE-15", "NLL"]
    rows = []
    for run_dir, _, point in runs:
        values = [point[k] for k in keys]
        if run_status(run_dir) != "finished":
            status = "failed" if run_dir in failed else run_status(run_dir)
            if stopped and run_dir.name in stopped:
                status = f"stopped early (epoch {stopped[run_dir.name]})"
            rows.append(values + [status] + [""] * (len(header) - len(keys) - 1))
            continue
        _, r = report.write_run_report(run_dir)
        u = r["methods"][0]["uniform"]
        acc = r["shift"]["accuracy"]
        shown = (u["top1"], u["many"], u["medium"], u["few"], acc["oracle"][0], acc["oracle"][-1], acc["em"][-1])
        rows.append(values + ["finished"] + [report_text.pct(v) for v in shown]
                    + [f"{u['ece']:.4f}", f"{u['nll']:.4f}"])
    spec["out"].mkdir(parents=True, exist_ok=True)
    with open(spec["out"] / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    text = f"# Sweep of {spec['base']}\n\n" + report_text.table(header, rows) + "\n"
    (spec["out"] / "sweep.md").write_text(text)
    return text
