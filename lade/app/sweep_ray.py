"""The Ray Tune backend of ``lade sweep`` (``--backend ray [--address ADDR]``); imported only for it.

Each grid point not yet done becomes one Tune trial, which is a ``lade train --resume`` run in its own
folder (``out/<key=value,...>``, as with the local backend), trained one epoch at a time
(``lade.app.training.train(..., stop_after=1)``). After each epoch the trial reports that epoch's row of
``metrics.jsonl`` to Tune together with a Tune checkpoint naming the epoch; lade's own atomic checkpoint
in the run folder holds the weights. A trial that Tune pauses or restarts therefore continues from
lade's checkpoint with the same weights as an uninterrupted run, and reports only the epochs Tune has
not seen. Each trial asks Tune for ``run.threads`` CPUs.

The optional ``ray`` section of the sweep file sets the early stopping::

    ray:
      scheduler: asha       # asha (asynchronous: stops a trial below its rung) or hyperband (synchronous:
                            # PAUSES a trial at a rung until its bracket's others get there, then resumes
                            # the best 1/reduction_factor and stops the rest)
      metric: loss          # a key of the metrics.jsonl rows: loss, train_acc, test_top1 (needs run.eval_every)
      mode: min             # min or max
      grace_period: 1       # ASHA: epochs before a trial may be stopped
      reduction_factor: 2   # the best 1/reduction_factor go on at each rung
      max_concurrent: 0     # trials at the same time (0: as many as the CPUs allow)

A paused trial gives its CPUs back; when Tune resumes it, the trial starts again from its last Tune
checkpoint (the epoch) and lade's checkpoint (the weights) and says so in its log. Trials stopped early
are listed in ``out/ray_stopped.json``; a rerun skips them and the finished runs.
"""
import contextlib
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from lade.app import config as config_mod
from lade.app.runs import read_metrics, run_status

__all__ = ["SETTINGS", "check_settings", "check_address", "run_trials", "stopped_early", "CONNECT_TIMEOUT"]

# key -> (default, checker)
SETTINGS = {
    "scheduler": ("asha", lambda v: v in ("asha", "hyperband")),
    "metric": ("loss", lambda v: isinstance(v, str) and v != "epoch"),
    "mode": ("min", lambda v: v in ("min", "max")),
    "grace_period": (1, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "reduction_factor": (2, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 1),
    "max_concurrent": (0, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
}
_STOPPED = "ray_stopped.json"
CONNECT_TIMEOUT = 10.0  # seconds; ray.init itself keeps retrying an address nothing answers on for minutes


def check_settings(section):
    """The sweep file's ``ray`` section with defaults filled in; ConfigError naming a bad key."""
    section = section or {}
    if not isinstance(section, dict):
        raise config_mod.ConfigError("lade sweep: key 'ray' must map settings to values")
    out = {}
    for key in section:
        if key not in SETTINGS:
            raise config_mod.ConfigError(f"lade sweep: key 'ray.{key}' is not known (known: "
                                         f"{', '.join(sorted(SETTINGS))})")
    for key, (default, ok) in SETTINGS.items():
        value = section.get(key, default)
        if not ok(value):
            raise config_mod.ConfigError(f"lade sweep: key 'ray.{key}' has a bad value {value!r} (default {default!r})")
        out[key] = value
    return out


def check_address(address):
    """Refuses (ConfigError naming --address) a HOST:PORT or ray://HOST:PORT address where nothing accepts a TCP
    connection within CONNECT_TIMEOUT. Other forms ('auto', None) are left to Ray."""
    if address is None or ":" not in address:
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise config_mod.ConfigError(f"lade sweep: --address must be HOST:PORT, ray://HOST:PORT or auto, got "
                                     f"{address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise config_mod.ConfigError(f"lade sweep: --address {address}: no Ray cluster answers there within "
                                     f"{CONNECT_TIMEOUT:g} s ({e.strerror or e}); start one with 'ray start --head' "
                                     f"or drop --address for a local Ray") from None


def stopped_early(out):
    """{run folder name: epoch} of the trials ASHA stopped in earlier sweeps into ``out``."""
    path = Path(out) / _STOPPED
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise config_mod.ConfigError(f"lade sweep: '{path}' is not valid JSON ({e}); delete it to rerun "
                                     f"the trials it lists") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        raise config_mod.ConfigError(f"lade sweep: '{path}': expected an object mapping run folder names to epochs, "
                                     f"got {json.dumps(data)[:60]}; delete it to rerun the trials it lists")
    return dict(data)


def _trial(config):
    """One Tune trial: trains the run folder epoch by epoch and reports every epoch's metrics row (plus
    the CPUs Ray gave the trial)."""
    import ray
    from ray import tune
    from lade.app import training
    config = config["trial"]
    run_dir = Path(config["run_dir"])
    cfg = config_mod.load(config["base"])
    cfg, changes = config_mod.apply_overrides(cfg, config["overrides"])
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    reported = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            reported = json.loads((Path(folder) / "lade_epoch.json").read_text())["epoch"]
    with open(config["log"], "a") as log, contextlib.redirect_stderr(log):
        if checkpoint is not None:
            log.write(f"lade sweep: trial restored by Tune after epoch {reported}\n")
        while True:
            status = training.train(cfg, run_dir, resume=True, overrides=changes, data_root=config["data_root"],
                                    progress=False, stop_after=1)
            log.flush()
            for row in read_metrics(run_dir / "metrics.jsonl"):
                if row["epoch"] <= reported:
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    Path(folder, "lade_epoch.json").write_text(json.dumps({"epoch": row["epoch"]}))
                    tune.report(dict(row, cpus=cpus), checkpoint=tune.Checkpoint.from_directory(folder))
                reported = row["epoch"]
            if status == "finished":
                return


def _save_stopped(out, stopped):
    path = Path(out) / _STOPPED
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stopped, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run_trials(spec, todo, settings, data_root=None, address=None):
    """Runs ``todo`` ([(run folder, overrides, point)]) as Tune trials under ASHA or HyperBand. Returns the run
    folders whose trial failed; records the ones stopped early."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler
    import lade

    out = Path(spec["out"]).resolve()
    base = spec["base"]
    if base.endswith((".yaml", ".yml")):
        base = str(Path(base).resolve())
    epochs, threads, given = {}, {}, {}
    trials = []
    for run_dir, overrides, _ in todo:
        cfg, _ = config_mod.apply_overrides(config_mod.load(base), overrides)
        given[str(run_dir.resolve())] = run_dir
        run_dir = run_dir.resolve()
        epochs[str(run_dir)], threads[str(run_dir)] = cfg["optim"]["epochs"], cfg["run"]["threads"]
        trials.append({"run_dir": str(run_dir), "base": base, "overrides": list(overrides),
                       "data_root": str(Path(data_root).resolve()) if data_root else None,
                       "log": str(out / "logs" / f"{run_dir.name}.log")})
    started_here = not ray.is_initialized()
    if started_here:
        # workers import the same lade as this process (a source checkout need not be installed)
        source = str(Path(lade.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}}, include_dashboard=False,
                 log_to_driver=False)
    try:
        common = dict(time_attr="epoch", metric=settings["metric"], mode=settings["mode"], max_t=max(epochs.values()),
                      reduction_factor=settings["reduction_factor"])
        if settings["scheduler"] == "hyperband":
            scheduler = HyperBandScheduler(**common)
        else:
            scheduler = ASHAScheduler(grace_period=settings["grace_period"], **common)
        trainable = tune.with_resources(_trial, lambda config: {"cpu": threads[config["trial"]["run_dir"]]})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=settings["max_concurrent"] or None,
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(storage_path=str(out / "ray"), name="tune", verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    failed, stopped = [], stopped_early(out)
    for result in results:
        run_dir = given[result.config["trial"]["run_dir"]]
        if result.error is not None:
            failed.append(run_dir)
            sys.stderr.write(f"lade sweep: FAILED {run_dir}: {str(result.error).strip().splitlines()[-1]}\n")
        elif run_status(run_dir) != "finished":
            stopped[run_dir.name] = int(result.metrics["epoch"])
            sys.stderr.write(f"lade sweep: stopped early by {settings['scheduler']} after epoch "
                             f"{stopped[run_dir.name]}: {run_dir}\n")
        else:
            sys.stderr.write(f"lade sweep: done {run_dir}\n")
    _save_stopped(out, stopped)
    return failed
