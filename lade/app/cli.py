"""Command line: python -m lade {train, evaluate, compare, sweep, configs}.

    python -m lade compare                      LADE vs PC Softmax, CIFAR-100-LT imbalance 100: the zoo's
                                                200-epoch models against the paper
    python -m lade compare --quick | --full     the same, trained: the quick preset, or the paper's recipe
    python -m lade train --config cifar100_lt_100_lade [optim.epochs=30 ...] [--out DIR] [--resume]
    python -m lade evaluate RUN_DIR|zoo:NAME [...] [--out DIR]   zoo entries: logits recomputed from the weights
    python -m lade evaluate --logits F --labels F --train-counts F [--calib-logits F --calib-labels F]
                            [--method softmax|balanced|lade] [--out DIR]     any model's logits (npy, npz, CSV)
    python -m lade features RUN_DIR [--out FILE] penultimate features of a finished run (train, held-out, test)
    python -m lade decoupled RUN_DIR [--out DIR] cRT, LWS, tau-norm and LADE re-training on those features,
                                                reported beside the end-to-end model
    python -m lade sweep GRID.yaml              independent, restartable runs of a grid; one table
    python -m lade sweep GRID.yaml --backend ray [--address ADDR]   the same as Ray Tune trials (ASHA or HyperBand)
    mpirun -np N python -m lade train --config ... run.distributed=mpi   data-parallel over N MPI ranks
    python -m lade configs                      list the shipped configs
    python -m lade zoo list | add RUN_DIR       the model zoo (zoo/): its entries; add a finished run
    python -m lade zoo refresh NAME             an entry's stored results computed again from its weights
    python -m lade results                      docs/results.md and the README's table, from the zoo

Overrides are 'section.key=value' and are printed as they are applied; nothing else changes a
config value. Every problem with the input (unknown key, wrong type, missing data root, a run
folder holding another run) is reported before training starts.

Exit status: 0 done; 1 a sweep run failed, or an internal error (a bug: please report it with the
output of --debug); 2 a problem with the input, the data, a run folder or the disk, reported as one
line naming the file, line or key, what was expected and what came; 130 interrupted (resumable).
--debug shows the traceback as well.
"""
import argparse
import sys
import traceback
from pathlib import Path

from lade import distributed
from lade.app import config as config_mod

QUICK = ("cifar100_lt_100_ce_quick", "cifar100_lt_100_lade_quick")
FULL = ("cifar100_lt_100_ce", "cifar100_lt_100_lade")


def _err(msg):
    sys.stderr.write(msg.rstrip() + "\n")


def _load_with_overrides(name, overrides, data_root=None):
    cfg = config_mod.load(name)
    cfg, changes = config_mod.apply_overrides(cfg, overrides)
    for key, old, new in changes:
        _err(f"lade: override {key}: {old!r} -> {new!r}")
    if data_root:
        _err(f"lade: data root from --data-root: {data_root}")
    return cfg, changes


def cmd_train(args):
    from lade.app import training
    if args.config is None and not args.resume:
        raise config_mod.ConfigError("lade train: --config is required (or --resume with --out RUN_DIR)")
    if args.config is None:  # resume from the folder's own config
        if args.out is None:
            raise config_mod.ConfigError("lade train: --resume without --config needs --out RUN_DIR")
        cfg, changes = _load_with_overrides(str(Path(args.out) / "config.yaml"), args.overrides, args.data_root)
    else:
        cfg, changes = _load_with_overrides(args.config, args.overrides, args.data_root)
    out = Path(args.out) if args.out else Path("runs") / cfg["name"]
    status = training.train(cfg, out, resume=args.resume, overwrite=args.overwrite, overrides=changes,
                            data_root=args.data_root, progress=not args.quiet, stop_after=args.stop_after)
    comm = training.distributed_comm(cfg)
    if status == "finished" and not args.no_report and (comm is None or comm.rank == 0):
        from lade.app import report
        text, _ = report.write_run_report(out)
        print(text)
    return 0


def cmd_evaluate(args):
    from lade.app import evaluation, report, runs
    files = [args.logits, args.labels, args.train_counts]
    if any(f is not None for f in files) or args.calib_logits or args.calib_labels:
        if args.run_dirs:
            raise config_mod.ConfigError("lade evaluate: give run folders or --logits/--labels/--train-counts, "
                                         "not both")
        if any(f is None for f in files):
            raise config_mod.ConfigError("lade evaluate: --logits, --labels and --train-counts go together")
        out = Path(args.out or "runs/logits_report")
        runs.check_output_dir(out)  # before the evaluation, which may take minutes
        results = evaluation.evaluate_logit_files(
            args.logits, args.labels, args.train_counts, args.calib_logits, args.calib_labels, method=args.method,
            estimated_prior=args.estimated_prior, zero_count_floor=args.zero_count_floor, name=Path(args.logits).stem)
        text = report.write_logits_report(results, out)
        _err(f"lade: wrote {out / 'report.md'}")
        print(text)
        return 0
    if not args.run_dirs:
        raise config_mod.ConfigError("lade evaluate: give run folders or zoo:NAME entries, or --logits, --labels "
                                     "and --train-counts")
    single = len(args.run_dirs) == 1 and args.out is None
    out = Path(args.out or ("runs/zoo" if single else "runs/comparison"))
    if not single or args.run_dirs[0].startswith("zoo:"):
        runs.check_output_dir(out)  # before the evaluation, which may take minutes
    run_dirs = _zoo_run_dirs(args.run_dirs, out, args.data_root)
    if single:
        text, _ = report.write_run_report(run_dirs[0])
        _err(f"lade: wrote {Path(run_dirs[0]) / 'report.md'}")
    else:
        text, _ = report.write_comparison(run_dirs, out)
        _err(f"lade: wrote {Path(out) / 'comparison.md'}")
    print(text)
    return 0


def _zoo_run_dirs(names, out, data_root):
    """Run folders for `evaluate`: zoo:NAME becomes out/NAME, a run folder with the entry's logits
    recomputed from its weights; other arguments are run folders already."""
    from lade.app import runs, zoo_entries
    if any(name.startswith(zoo_entries.ZOO_PREFIX) for name in names):
        runs.output_dir(out)  # holds the entries' run folders
    dirs = []
    for name in names:
        if name.startswith(zoo_entries.ZOO_PREFIX):
            entry = name[len(zoo_entries.ZOO_PREFIX):]
            _err(f"lade: {name}: recomputing its logits from the weights into {out / entry}")
            name = zoo_entries.materialize(entry, out / entry, data_root)[0]
        dirs.append(name)
    return dirs


def cmd_zoo(args):
    from lade import zoo
    from lade.app import zoo_entries
    if args.action == "add":
        if not args.run_dir:
            raise config_mod.ConfigError("lade zoo add: give the finished run folder to add")
        entry = zoo_entries.add_run(args.run_dir, args.root, args.name, args.data_root)
        _err(f"lade: added {args.run_dir} to the zoo as {entry['name']} ({entry['bytes']} bytes)")
        return 0
    if args.action == "refresh":
        if not args.run_dir:
            raise config_mod.ConfigError("lade zoo refresh: give the name of the entry whose results to compute again")
        entry = zoo_entries.refresh_results(args.run_dir, args.root, args.data_root)
        _err(f"lade: computed the results of {entry['name']} again from its weights ({entry['bytes']} bytes)")
        return 0
    if args.run_dir:
        raise config_mod.ConfigError(f"lade zoo list: takes no run folder, got {args.run_dir!r}")
    for e in zoo.list(args.root):
        top1 = ", ".join(f"{label} {v:.2f}" for label, v in e["headline"].items())
        print(f"{e['name']}: {e['dataset']} imbalance {e['imbalance']:g}, {e['epochs']} epochs, {top1} "
              f"({e['train_hours']} h on {', '.join(e['trained_on'])})")
    return 0


def cmd_results(args):
    from lade.app import results_doc
    repo_root = Path(__file__).resolve().parents[2]
    for path in results_doc.write(repo_root, args.root):
        _err(f"lade: wrote {path}")
    return 0


def cmd_features(args):
    from lade.app import decoupled_stage
    out = decoupled_stage.save_features(args.run_dir, args.out, data_root=args.data_root)
    _err(f"lade: wrote {out}")
    return 0


def cmd_decoupled(args):
    from lade.app import decoupled_stage
    text = decoupled_stage.report(args.run_dir, args.out, data_root=args.data_root, epochs=args.epochs)
    print(text)
    return 0


def cmd_compare(args):
    from lade.app import zoo_entries
    if not (args.quick or args.full):
        present, missing = zoo_entries.main_entries()
        if present:
            return _compare_zoo(args, present, missing)
        _err("lade: the model zoo has no 200-epoch model at CIFAR-100-LT imbalance 100 yet (zoo/QUEUE.md); "
             "training the quick preset instead (--quick)")
    return _compare_training(args)


def _compare_zoo(args, present, missing):
    """The main command: the zoo's 200-epoch models at imbalance 100, evaluated again from their weights."""
    from lade.app import report, results_doc, runs, zoo_entries
    if args.overrides or args.stop_after:
        raise config_mod.ConfigError("lade compare: overrides and --stop-after train; the zoo's models are trained "
                                     "already (use --quick or --full to train)")
    out = runs.output_dir(args.out or "runs/compare_zoo")
    results = []
    for name in present:
        _err(f"lade: zoo:{name}: recomputing its logits from the weights into {out / name}")
        results.append(zoo_entries.evaluate_entry(name, out / name, args.data_root))
    title = "CIFAR-100-LT imbalance 100: the model zoo's 200-epoch ResNet-32s"
    _, brief = report.write_comparison([out / name for name in present], out, title=title, results=results)
    print(brief)
    print("## Against the paper (spec §6.1, uniform top-1 %)\n")
    print(results_doc.against_paper(results))
    if missing:
        print(f"\nNot in the zoo yet: {', '.join(missing)} (zoo/QUEUE.md).")
    print(f"\nThe full report (uniform and shifted tests, calibration, the estimated prior) and its plots: "
          f"{out / 'comparison.md'}; training the quick preset instead: --quick")
    return 0


def _compare_training(args):
    from lade.app import datasets, report, runs, training
    names = FULL if args.full else QUICK
    out = Path(args.out or ("runs/compare_full" if args.full else "runs/compare_quick"))
    configs = [_load_with_overrides(n, args.overrides, None) for n in names]
    for cfg, _ in configs:  # every input problem shows up before the first run starts
        datasets.resolve_data_root(cfg, args.data_root)
        runs.check_run_dir(out / cfg["name"], cfg, resume=True)
    runs.output_dir(out)  # holds the runs and the comparison: marked before the runs are made in it
    # With --stop-after every run advances by N epochs in turn, so that long runs progress together.
    run_dirs, unfinished = [], []
    for cfg, changes in configs:
        run_dir = out / cfg["name"]
        _err(f"lade: training {cfg['name']} into {run_dir}")
        status = training.train(cfg, run_dir, resume=True, overrides=changes, data_root=args.data_root,
                                progress=not args.quiet, stop_after=args.stop_after)
        (run_dirs if status == "finished" else unfinished).append(run_dir)
    if unfinished:
        _err(f"lade: {', '.join(map(str, unfinished))} not finished; run the same command again to continue")
        return 0
    title = ("LADE vs PC Softmax, CIFAR-100-LT imbalance 100, " +
             ("paper recipe (200 epochs)" if args.full else "quick preset"))
    _, brief = report.write_comparison(run_dirs, out, title=title)
    print(brief)
    print(f"The full report (uniform and shifted tests, calibration, the estimated prior) and its plots: "
          f"{out / 'comparison.md'}")
    return 0


def cmd_sweep(args):
    from lade.app import sweep
    text, failed = sweep.run(args.grid, jobs=args.jobs, dry_run=args.dry_run, data_root=args.data_root,
                             backend=args.backend, address=args.address)
    print(text)
    if failed:
        _err(f"lade sweep: {len(failed)} run(s) failed: {', '.join(map(str, failed))}; see their logs")
        return 1
    return 0


def cmd_configs(args):
    for name in config_mod.builtin_names():
        print(name)
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="python -m lade", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", parents=[common], help="train one config into a run folder")
    t.add_argument("--config", help="a shipped config name (see 'configs') or a YAML file")
    t.add_argument("overrides", nargs="*", metavar="section.key=value")
    t.add_argument("--out", help="run folder (default runs/<config name>)")
    t.add_argument("--data-root", help="folder holding the data archives (default <repo>/../shared/data)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    t.add_argument("--stop-after", type=_positive_int, metavar="N", help="stop after N more epochs (resumable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-report", action="store_true", help="do not evaluate at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", parents=[common],
                       help="report of one run, a comparison of several, or of any model's saved logits")
    e.add_argument("run_dirs", nargs="*")
    e.add_argument("--out", help="folder for the comparison (default runs/comparison; runs/logits_report with "
                                 "--logits)")
    e.add_argument("--logits", help="test logits (samples x classes) as .npy, .npz or .csv")
    e.add_argument("--labels", help="test labels (0-based integers)")
    e.add_argument("--train-counts", help="training images per class")
    e.add_argument("--calib-logits", help="logits of a labelled held-out source set (calibration, EM, BBSE)")
    e.add_argument("--calib-labels", help="its labels")
    e.add_argument("--method", choices=("softmax", "balanced", "lade"), default="softmax",
                   help="the loss the model was trained with (softmax: PC adjustment; balanced, lade: + log p_t)")
    e.add_argument("--estimated-prior", choices=("auto", "full", "fast", "none"), default="auto",
                   help="how p_t is estimated (see lade.app.evaluation.evaluate_logits); auto: fast above 5M logits")
    e.add_argument("--zero-count-floor", type=float, metavar="X",
                   help="count a class without training images as X images (default: refuse it)")
    e.add_argument("--data-root", help="with zoo:NAME: folder holding the data archives (default <repo>/../shared/data)")
    e.set_defaults(func=cmd_evaluate)

    fe = sub.add_parser("features", parents=[common],
                        help="save the penultimate features of a finished run (train, held-out, test)")
    fe.add_argument("run_dir")
    fe.add_argument("--out", help="the .npz to write (default RUN_DIR/features.npz)")
    fe.add_argument("--data-root")
    fe.set_defaults(func=cmd_features)

    de = sub.add_parser("decoupled", parents=[common],
                        help="cRT, LWS, tau-norm and LADE re-training on a run's features, beside the run")
    de.add_argument("run_dir")
    de.add_argument("--out", help="report folder (default RUN_DIR/decoupled)")
    de.add_argument("--data-root")
    de.add_argument("--epochs", type=_positive_int, default=10, help="epochs of each re-training (default 10)")
    de.set_defaults(func=cmd_decoupled)

    c = sub.add_parser("compare", parents=[common], help="LADE vs PC Softmax on CIFAR-100-LT imbalance 100: the "
                       "zoo's 200-epoch models, or trained (--quick, --full; resumable)")
    how = c.add_mutually_exclusive_group()
    how.add_argument("--quick", action="store_true", help="train the quick preset (minutes) instead of the zoo's models")
    how.add_argument("--full", action="store_true", help="train the paper's recipe: 200 epochs, batch 256, lr 0.2")
    c.add_argument("overrides", nargs="*", metavar="section.key=value")
    c.add_argument("--out", help="folder for both runs and the comparison")
    c.add_argument("--data-root")
    c.add_argument("--stop-after", type=_positive_int, metavar="N", help="stop each run after N more epochs")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compare)

    s = sub.add_parser("sweep", parents=[common], help="run a grid of configs as independent, restartable processes")
    s.add_argument("grid", help="sweep YAML (see lade/app/sweep.py)")
    s.add_argument("--jobs", type=_positive_int, default=1, help="runs at the same time")
    s.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    s.add_argument("--data-root")
    s.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: --jobs processes on this machine; ray: Ray Tune trials with ASHA or HyperBand "
                        "early stopping")
    s.add_argument("--address", help="with --backend ray: the Ray cluster to join (e.g. auto); default: start a "
                                     "local Ray")
    s.set_defaults(func=cmd_sweep)

    sub.add_parser("configs", parents=[common], help="list the shipped configs").set_defaults(func=cmd_configs)

    z = sub.add_parser("zoo", parents=[common], help="the model zoo: list its entries, add a finished run, or "
                                                     "compute an entry's stored results again")
    z.add_argument("action", choices=("list", "add", "refresh"))
    z.add_argument("run_dir", nargs="?", help="with add: the finished run folder; with refresh: the entry's name")
    z.add_argument("--name", help="with add: the entry's name (default CONFIG_seedN)")
    z.add_argument("--root", help="the zoo folder (default $LADE_ZOO, else the checkout's zoo/)")
    z.add_argument("--data-root", help="with add and refresh: the data root the run used (add records a digest of "
                                       "its data, refresh checks it)")
    z.set_defaults(func=cmd_zoo)

    r = sub.add_parser("results", parents=[common],
                       help="rewrite docs/results.md and the README's headline table from the zoo's stored results")
    r.add_argument("--root", help="the zoo folder (default $LADE_ZOO, else the checkout's zoo/)")
    r.set_defaults(func=cmd_results)
    return p


# Errors about the input, the data, a run folder or the disk: the user can fix them (exit status 2).
def _input_errors():
    from lade.data import DecodeError
    from lade.app.runs import RunError
    return (config_mod.ConfigError, RunError, DecodeError, OSError, ValueError, TypeError, KeyError,
            FloatingPointError)


def _one_line(e):
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return text if text.startswith("lade") else f"lade: {type(e).__name__}: {text}"


def _parse(argv):
    """Like parse_args, but overrides may come after options too (`train --resume run.eval_every=1`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # help, or the error naming the commands


def main(argv=None):
    args = _parse(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err(f"lade{distributed.job_label()}: interrupted; continue with --resume")
        code = 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        line = _one_line(e)
        if line.startswith("lade"):  # say which rank of an MPI job failed
            line = "lade" + distributed.job_label() + line[len("lade"):]
        if isinstance(e, _input_errors()):
            _err(line)
            code = 2
        else:
            _err(f"{line} (an internal error: please report it with the output of --debug)")
            code = 1
    # in an MPI job (run.distributed=mpi) the other ranks would wait for this one forever: end them all
    distributed.abort_job(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
