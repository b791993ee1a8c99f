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

``python -m lade sweep FILE [--jobs N]`` validates every combination first (a bad key stops the
sweep before anything trains), then runs each one as its own ``python -m lade train --resume``
process into ``out/<key=value,...>``; finished runs are skipped and killed ones continue from
their checkpoint, so rerunning an interrupted sweep only does the missing work. Logs go to
``out/logs/``. At the end every finished run is evaluated and the results are collected in
``out/sweep.md`` and ``out/sweep.csv``.
"""
import csv
import itertools
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lade.app import config as config_mod
from lade.app.datasets import resolve_data_root
from lade.app.runs import run_status

__all__ = ["load_grid", "plan", "run"]

_KEYS = {"base", "out", "fixed", "grid"}


def load_grid(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lade sweep: '{path}' does not exist")
    try:
        spec = config_mod.parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise config_mod.ConfigError(f"lade sweep: '{path}' is not valid YAML ({e})") from None
    if not isinstance(spec, dict):
        raise config_mod.ConfigError(f"lade sweep: '{path}' must hold a mapping")
    for key in spec:
        if key not in _KEYS:
            raise config_mod.ConfigError(f"lade sweep: key '{key}' is not known (known: {', '.join(sorted(_KEYS))})")
    if "base" not in spec or "grid" not in spec:
        raise config_mod.ConfigError(f"lade sweep: '{path}' needs the keys 'base' and 'grid'")
    grid = spec["grid"]
    if not isinstance(grid, dict) or not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise config_mod.ConfigError("lade sweep: key 'grid' must map section.key to non-empty lists of values")
    fixed = spec.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise config_mod.ConfigError("lade sweep: key 'fixed' must map section.key to values")
    base = str(spec["base"])
    if base.endswith((".yaml", ".yml")) and not Path(base).is_absolute():
        base = str(path.parent / base)
    return {"base": base, "out": Path(spec.get("out") or f"runs/sweep_{path.stem}"), "fixed": fixed, "grid": grid}


def _override(key, value):
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def plan(spec):
    """[(run folder, overrides, {grid key: value})] for every combination, all validated."""
    base = config_mod.load(spec["base"])
    keys = list(spec["grid"])
    runs, folders = [], {}
    for values in itertools.product(*(spec["grid"][k] for k in keys)):
        point = dict(zip(keys, values))
        overrides = [_override(k, v) for k, v in spec["fixed"].items()] + [_override(k, v) for k, v in point.items()]
        config_mod.apply_overrides(base, overrides)  # raises ConfigError naming a bad key
        name = ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_")
        if name.startswith("."):
            name = "_" + name
        if name in folders:  # e.g. optim.lr: [0.1, 0.10]: two runs would write into one folder
            raise config_mod.ConfigError(f"lade sweep: key 'grid' gives two runs the same folder '{name}' "
                                         f"({folders[name]} and {point}); list each value once")
        folders[name] = point
        runs.append((spec["out"] / name, overrides, point))
    return runs


def run(grid_path, jobs=1, dry_run=False, data_root=None):
    """Runs the sweep (see the module docstring); returns (the Markdown table, the run folders that failed)."""
    spec = load_grid(grid_path)
    runs = plan(spec)
    resolve_data_root(config_mod.load(spec["base"]), data_root)
    todo = [r for r in runs if run_status(r[0]) != "finished"]
    sys.stderr.write(f"lade sweep: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to do\n")
    if dry_run:
        for run_dir, _, _ in runs:
            sys.stderr.write(f"  {run_status(run_dir):9s} {run_dir}\n")
        return "", []
    logs = spec["out"] / "logs"
    logs.mkdir(parents=True, exist_ok=True)
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


def collect(spec, runs, failed=()):
    """Evaluates the finished runs and writes sweep.md / sweep.csv; returns the Markdown."""
    from lade.app import report
    keys = list(spec["grid"])
    header = keys + ["status", "uniform top-1", "many", "medium", "few", "F50 oracle", "B50 oracle", "B50 EM",
                     "ECE-15", "NLL"]
    rows = []
    for run_dir, _, point in runs:
        values = [point[k] for k in keys]
        if run_status(run_dir) != "finished":
            status = "failed" if run_dir in failed else run_status(run_dir)
            rows.append(values + [status] + [""] * (len(header) - len(keys) - 1))
            continue
        _, r = report.write_run_report(run_dir)
        u = r["methods"][0]["uniform"]
        acc = r["shift"]["accuracy"]
        rows.append(values + ["finished"] + [report._pct(v) for v in (u["top1"], u["many"], u["medium"], u["few"],
                                                                      acc["oracle"][0], acc["oracle"][-1],
                                                                      acc["em"][-1])]
                    + [f"{u['ece']:.4f}", f"{u['nll']:.4f}"])
    spec["out"].mkdir(parents=True, exist_ok=True)
    with open(spec["out"] / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    text = f"# Sweep of {spec['base']}\n\n" + report._table(header, rows) + "\n"
    (spec["out"] / "sweep.md").write_text(text)
    return text
