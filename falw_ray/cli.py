"""The ``falw-ray`` command line."""
from __future__ import annotations

import argparse
import shlex
import sys
import textwrap


def _parse_sets(items: list[str]) -> dict[str, dict[str, float]]:
    """``method.param=value`` (or ``method+falw.param=value``) -> {method: {param: value}}."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"falw-ray: --set {item!r}: expected METHOD.PARAM=VALUE, e.g. ga.lr=0.003")
        try:
            out.setdefault(method, {})[param] = float(value)
        except ValueError:
            raise SystemExit(f"falw-ray: --set {item!r}: {value!r} is not a number") from None
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from .scenario import ForgetSpec, Scenario

    try:
        forget = ForgetSpec(kind=args.forget, ratio=args.ratio, gamma=args.gamma)
        scenario = Scenario(dataset=args.dataset, model=args.model, forget=forget, seed=args.seed,
                            data_dir=args.data_dir, data_file=args.data_file)
        methods = [_plugin_aware(name) for name in args.methods or _compare_methods()]
        _check_sets(args.hp, methods)
    except ValueError as e:
        raise SystemExit(f"falw-ray compare: {e}") from None
    import torch

    from .columns import LABELS
    from .console import fit_table, width
    from .experiment import Experiment

    torch.set_num_threads(args.threads) if args.threads else None
    exp = Experiment(scenario, device=args.device, store=None if args.no_store else args.store)
    table = exp.compare(methods, hp=args.hp, epochs=args.epochs)
    header = ["method", "falw", *LABELS.values()]
    rows = [[str(r["method"]), str(r["falw"]), *(f"{r[k]:.2f}" for k in LABELS)] for _, r in table.iterrows()]
    print("\n\n".join("\n".join(block) for block in fit_table(header, rows, 2, width(), indent="")))
    return 0


def _compare_methods() -> list[str]:
    """Every method a comparison runs by default: built-ins, presets and installed plugin methods."""
    from .unlearn import METHODS, PRESETS, plugin_names

    return [m for m in METHODS if m != "retrain"] + list(PRESETS) + plugin_names()


def _plugin_aware(name: str) -> str:
    """A method name as the command line gives it, checked (a plugin loaded, a module beside the
    working directory found): one line when it names nothing."""
    from pathlib import Path

    from .unlearn import METHODS, PRESETS, load_plugin

    return name if name in METHODS or name in PRESETS else load_plugin(name, base=Path.cwd()).method.name


LIBRARIES = ("torch", "ray", "mlflow", "optuna")
"""The libraries whose versions ``--version`` names beside falw_ray's."""


def version_text() -> str:
    """falw_ray's version and where it runs from, and the installed libraries' versions, read from
    their package metadata: nothing is imported, so the answer is as quick as --help."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    from . import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    return (f"falw-ray {__version__} ({Path(__file__).parent}, Python {platform.python_version()})\n"
            + ", ".join(installed(name) for name in LIBRARIES))


class _Version(argparse.Action):
    """--version, computed only when asked for (argparse's own takes a string made up front)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _check_sets(hp: dict[str, dict[str, float]], names: list[str]) -> None:
    """Every ``--set METHOD.PARAM`` names a method of this comparison (``name+falw`` its FaLW run) and one
    of its hyperparameters: a typo stops here in one line, not silently after the baselines trained."""
    from .console import did_you_mean
    from .unlearn import PRESETS, get_method

    labels = {f"{n}+falw": n for n in names if n not in PRESETS and get_method(n).forget_term} | {n: n for n in names}
    for key, params in hp.items():
        if key not in labels:
            raise ValueError(f"--set {key}.{next(iter(params))}: no method {key!r} in this comparison"
                             f"{did_you_mean(key, labels)}; expected one of {sorted(labels)}")
        method = get_method(labels[key])
        allowed = set(method.all_params()) | ({"tau"} if key.endswith("+falw") or PRESETS.get(key, ("", False))[1]
                                              else set())
        for param in params:
            if param == "tau" and f"{key}+falw" in labels:
                raise ValueError(f"--set {key}.tau: tau is FaLW's; set it on the FaLW run, {key}+falw.tau")
            if param not in allowed:
                raise ValueError(f"--set {key}.{param}: method {key!r} has no hyperparameter {param!r}"
                                 f"{did_you_mean(param, allowed)}; expected one of {sorted(allowed)}")


def _fail(err: Exception) -> int:
    print(f"falw-ray: {err}", file=sys.stderr)  # an error stays one line, however wide: grep finds it whole
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    from .study.runner import Study, StudyInterrupted
    from .study.spec import StudyError
    from .study.tracking.tracker import TrackingError

    try:
        study = Study.from_yaml(args.study)
        result = study.run(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage,
                           progress=not args.quiet, resume=args.command in ("resume", "sync"), verbose=args.verbose,
                           sync_only=args.command == "sync", fresh=getattr(args, "fresh", False))
    except StudyInterrupted as e:
        print(f"falw-ray: {e}", file=sys.stderr)
        return 130
    except (StudyError, TrackingError, ValueError, OSError) as e:
        return _fail(e)
    print(result.show())
    experiment = study.spec.tracking.experiment or study.spec.name
    print(f"\nresults: {result.results_dir}\n{mlflow_hint(result.tracking_uri, experiment)}")
    failures = result.failures()
    for error, n in failures.items():  # the tables above hold what finished; these trials did not
        print(f"falw-ray: {n} trial(s) failed: {error}", file=sys.stderr)
    return 1 if failures else 0


def mlflow_hint(uri: str, experiment: str, columns: int | None = None) -> str:
    """How to look at a study in MLflow: open the server, or serve a local store on 127.0.0.1. On one
    line where it fits in ``columns`` (the terminal's width); else the command on lines of its own,
    broken before ``--host`` for the shell to join, every part of it whole for copying."""
    from .console import width

    columns = columns or width()
    if uri.startswith(("http://", "https://")):
        command, sep = [f"open {uri.rstrip('/')}"], " "
    else:
        command, sep = [f"mlflow ui --backend-store-uri {uri}", "--host 127.0.0.1 --port 5000"], "  "
    one = f"MLflow:  {' '.join(command)}{sep}(experiment {experiment})"
    if len(one) <= columns:
        return one
    if len("  " + " ".join(command)) <= columns or len(command) == 1:
        return f"MLflow:  experiment {experiment}, to see it:\n  " + " ".join(command)
    return f"MLflow:  experiment {experiment}, to see it:\n  " + " \\\n    ".join(command)


def cmd_submit(args: argparse.Namespace) -> int:
    from .study.spec import StudyError
    from .study.cluster.submit import cluster_locations, follow_hint, submit_study

    try:
        where = cluster_locations(args.study, args.storage, args.tracking_uri)  # refuses relative locations
        job_id = submit_study(args.study, args.address, working_dir=args.working_dir, storage=args.storage,
                              tracking_uri=args.tracking_uri)
    except (StudyError, ValueError, FileNotFoundError, ConnectionError, PermissionError) as e:
        return _fail(e)
    print(f"submitted job {job_id}")
    print("\n".join(where.lines()))
    print(follow_hint(args.address, job_id))
    return 0


def cmd_slurm(args: argparse.Namespace) -> int:
    from .study.cluster import slurm
    from .study.spec import StudyError

    if args.status:
        return slurm_status(args)
    try:
        opts = slurm.SlurmOptions(nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=args.cpus_per_node,
                                  mem=args.mem, time=args.time, partition=args.partition, account=args.account,
                                  qos=args.qos, sbatch_args=tuple(args.sbatch_arg), setup=args.setup,
                                  signal_lead=args.signal_lead)
        script, job_id, spec, where = slurm.submit(args.study, opts, args.storage, args.tracking_uri, args.dry_run)
    except (StudyError, ValueError, FileNotFoundError, RuntimeError) as e:
        return _fail(e)
    if args.dry_run:
        print(script, end="")
        return 0
    from .console import shell, width

    p = slurm.paths(where.storage, spec.name)
    inflight = slurm.trials_in_flight(opts, spec.resources.cpu, spec.resources.gpu)
    print(f"submitted job {job_id} ({opts.nodes} node(s)"
          + (f", {inflight} trial(s) at a time" if inflight else "") + ")")
    print("\n".join(where.lines()))
    log, columns = shlex.quote(str(p["log"]).replace("%j", job_id)), width()
    status = ["falw-ray slurm --status", shlex.quote(args.study)]
    print("\n".join([shell("follow: ", ["tail -f", log], columns), f"queue:  squeue -j {job_id}",
                     f"stop:   scancel {job_id}  (a stop: no follow-up job)",
                     shell("status: ", status + ([f"--storage {shlex.quote(args.storage)}"] if args.storage else []),
                           columns)]))
    return 0


def slurm_status(args: argparse.Namespace) -> int:
    """Which job a study is on and how far it is: its chain of jobs, and the trials its journal holds."""
    from .study.cluster import slurm
    from .study.spec import StudyError, load_study

    try:
        spec = load_study(args.study)
    except (StudyError, ValueError, FileNotFoundError) as e:
        return _fail(e)
    storage = args.storage or spec.storage
    chain = slurm.job_chain(slurm.paths(storage, spec.name)["jobs"])
    if not chain:
        return _fail(ValueError(f"{spec.name}: no Slurm job recorded under {storage}/slurm: submit it with "
                                f"falw-ray slurm {args.study}"))
    for entry in chain:
        ended = f", exit {entry['rc']}" if "rc" in entry else ""
        warned = ", stopped at its time limit" if "warned" in entry["events"] else ""
        print(f"job {entry['job']}: {entry['mode']}, {slurm.slurm_state(entry['job'])}{warned}{ended}")
    from .study.record.journal import Journal, journal_path

    journal = Journal(journal_path(storage, spec.name))
    print(f"journal: {len(journal.load())} trial(s) recorded ({journal.path})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .study.report import report
    from .study.record.results import console_table
    from .study.spec import StudyError, load_study
    from .study.tracking.tracker import TrackingError

    name, uri = args.study, args.tracking_uri
    try:
        if args.study.endswith((".yaml", ".yml")):
            spec = load_study(args.study)
            name, uri = spec.tracking.experiment or spec.name, uri or spec.tracking.uri
        table = report(name, uri, args.out, args.run_id)
    except (StudyError, TrackingError) as e:
        return _fail(e)
    print(console_table(table))
    paths = table.attrs.get("paths") or []
    if paths:
        print(f"\ntable and plots: {paths[0].parent}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from .console import width
    from .study.spec import StudyError

    status = 0
    for path in args.files:
        try:
            with open(path) as f:
                head = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            head = None
        try:
            if isinstance(head, dict) and "provider" in head:
                from .study.cluster.config import validate_cluster_config

                from .study.cluster.config import PLACEHOLDER, placeholders

                validate_cluster_config(path)
                print(f"{path}: valid Ray cluster config")
                for field in placeholders(path):
                    print(f"{path}: warning: {field} still holds a {PLACEHOLDER} placeholder: put your own value "
                          "there before `ray up`", file=sys.stderr)
            else:
                spec, cells = _check_study(path, data_here=not args.skip_data_check)
                print(f"{path}: valid study '{spec.name}' ({len(cells)} cells x {spec.search.trials} trials)")
                if spec.description.strip():
                    print(textwrap.fill(" ".join(spec.description.split()), width=width(),
                                        initial_indent="  ", subsequent_indent="  "))
        except (StudyError, ValueError) as e:
            print(e, file=sys.stderr)
            status = 2
    return status


def _check_study(path: str, data_here: bool = True):
    """A study file's spec and cells, as ``run`` would build them, without Ray, MLflow or torch (the
    runner imports them all); ``data_here``: its data_dir must exist on this machine, as ``run`` checks."""
    from .study.search.cells import build_cells
    from .study.spec import StudyError, load_study

    spec = load_study(path)
    if data_here:
        try:
            spec.preflight(str(path))
        except StudyError as e:
            raise StudyError(f"{e}; for a study whose data lives on a cluster, validate with --skip-data-check") from None
    try:
        return spec, build_cells(spec)
    except ValueError as e:
        raise StudyError(f"{path}: {e}") from None


def _store_root(args: argparse.Namespace):
    from pathlib import Path

    root = Path(args.store).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no baseline store at {root} (a study's is <storage>/baselines; see --store)")
    return root


def cmd_baselines_list(args: argparse.Namespace) -> int:
    from .scenario import BASELINE_CODE_VERSION
    from .store_admin import entries, format_entries, human_size

    try:
        root = _store_root(args)
    except FileNotFoundError as e:
        return _fail(e)
    found = entries(root)
    for line in format_entries(found):
        print(line)
    stale = sum(e.stale(BASELINE_CODE_VERSION) for e in found)
    print(f"{len(found)} entries, {human_size(sum(e.size for e in found))} in {root.resolve()}; "
          f"code version now {BASELINE_CODE_VERSION}, {stale} stale")
    return 0


def cmd_baselines_prune(args: argparse.Namespace) -> int:
    from .store_admin import human_size, prune

    try:
        root = _store_root(args)
        report = prune(root, stale=args.stale, older_than_days=args.older_than, dry_run=args.dry_run)
    except (FileNotFoundError, ValueError) as e:
        return _fail(e)
    verb = "would remove" if args.dry_run else "removed"
    in_use = f", {len(report.in_use)} in use kept" if report.in_use else ""
    print(f"{verb} {len(report.removed)} entries ({human_size(report.freed)}){in_use}; "
          f"{report.kept} {'would stay' if args.dry_run else 'left'} in {root.resolve()}")
    return 0


def _num(v: float) -> str:
    return f"{v:g}"


def _param_rows(method, falw: bool) -> list[tuple[str, ...]]:
    from .unlearn import TAU

    params = dict(method.params)
    if falw:
        params["tau"] = TAU
    rows = []
    for name, p in params.items():
        kind = ", log" if p.log else ", integer" if p.integer else ""
        searched = ("with FaLW" if name == "tau" else "yes") if p.searched else "no"
        rows.append((name, _num(p.default), f"{_num(p.low)} .. {_num(p.high)}{kind}", searched, p.help))
    return rows


def _option_default(option, preset: str | None) -> str:
    if preset is not None:
        return f"{preset} (preset)"
    if isinstance(option.default, str):
        return option.default
    special = [f"{choice} on {ds}" for ds, choice in option.default.items() if ds != "*"]
    return ", ".join(special) + f", else {option.default['*']}"


HELP_ROOM = 24
"""Narrower than this, a listing's help text goes on lines of its own under its row."""


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ",
           columns: int | None = None) -> list[str]:
    """Aligned rows within ``columns`` (the terminal's width): the last column (a help text) wraps
    under itself, or, where the others leave it less than :data:`HELP_ROOM`, below its row."""
    from .console import width, wrap

    columns = columns or width()
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lead = len(indent) + sum(w + 2 for w in widths)
    room = columns - lead
    out = []
    for r in (header, *rows):
        first = indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))
        if room >= HELP_ROOM:
            text = wrap(r[-1], room, indent="")
            out += [(first + "  " + text[0]).rstrip()] + [" " * lead + t for t in text[1:]]
        else:
            out += [first.rstrip()] + ([] if r is header or not r[-1] else wrap(indent + "    " + r[-1], columns, indent=""))
    return out


def describe_method(name: str) -> list[str]:
    """A method's (or preset's) summary, where it comes from, FaLW switch, hyperparameters and options,
    as ``falw-ray methods`` prints them."""
    from .unlearn import PLUGINS, PRESET_OPTIONS, PRESETS, get_method

    method = get_method(name)
    if name in PRESETS:
        base, on = PRESETS[name]
        fixed = ", ".join(f"{k} {v}" for k, v in PRESET_OPTIONS.get(name, {}).items())
        lines = [f"{name}: preset = {base} with FaLW {'on' if on else 'off'}{'; ' + fixed if fixed else ''}",
                 f"  {method.summary}"]
        falw_modes = [on]
    else:
        plugin = PLUGINS.get(method.name)
        lines = [f"{method.name}: {method.summary}",
                 f"  from: {'plugin ' + plugin.origin if plugin is not None else 'built-in'}"]
        falw_modes = [False, True] if method.forget_term else [False]
        lines.append("  FaLW: off or on (a cell each; tau is searched when on)" if method.forget_term
                     else "  FaLW: no (no forget term to weight)")
    lines += _table(("hyperparameter", "default", "range", "searched", "help"), _param_rows(method, max(falw_modes)))
    preset_opts = PRESET_OPTIONS.get(name, {})
    if method.options:
        lines += _table(("option", "choices", "default", "help"),
                        [(k, ", ".join(o.choices), _option_default(o, preset_opts.get(k)), o.help)
                         for k, o in method.options.items()])
    else:
        lines.append("  options: none")
    return lines


def cmd_methods(args: argparse.Namespace) -> int:
    """Built-in methods, presets and installed plugin methods (or the ones named, ``module:ATTR`` too).
    A plugin that cannot be loaded is listed as such, in one line, and the exit status is 1."""
    from .console import width, wrap
    from .unlearn import METHODS, PRESETS, plugin_names

    names = args.names or [*METHODS, *PRESETS, *plugin_names()]
    blocks, broken, columns = [], 0, width()
    for name in names:
        try:
            blocks.append("\n".join(describe_method(_plugin_aware(name))))
        except ValueError as e:
            if args.names and len(args.names) == 1:
                return _fail(e)
            blocks.append(f"{name}: cannot be loaded: {e}")
            broken += 1
    print("\n\n".join("\n".join(wrap(b, columns)) for b in blocks))
    print("\n" + "\n".join(wrap(
        "In a study, a method's space: fixes a hyperparameter (a number) or searches it ({low, high, log}), "
        "epochs: N sets its epochs and options: its choices; docs/method.md says what each method computes, "
        "docs/plugins.md how to add one.", columns, indent="")))
    return 1 if broken else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="falw-ray", description="Tune and compare unlearning methods with FaLW.")
    p.add_argument("--version", action=_Version, help="print falw_ray's version and those of torch, Ray, MLflow "
                                                       "and Optuna, and exit")
    sub = p.add_subparsers(dest="command", required=True)
    from .data.registry import DATASETS
    from .models import MODELS
    from .store import DEFAULT_STORE

    methods = _compare_methods()
    c = sub.add_parser("compare", help="run every method with and without FaLW on one scenario (no Ray) and print "
                                       "the table; baselines come from the store, trained there only once")
    c.add_argument("--dataset", default="mnist1d", choices=sorted(DATASETS), help="data set (default: mnist1d)")
    c.add_argument("--model", default=None, metavar="MODEL",
                   help=f"model (default: the data set's): {', '.join(sorted(MODELS))}, or module:FUNCTION")
    c.add_argument("--forget", default="longtail", choices=["longtail", "random"], help="forget set kind")
    c.add_argument("--ratio", type=float, default=0.1, help="forget set share of the training pool (default 0.1)")
    c.add_argument("--gamma", type=float, default=1.0, help="long-tail exponent (default 1)")
    c.add_argument("--seed", type=int, default=0, help="seed of the baselines, splits and unlearning")
    c.add_argument("--epochs", type=int, default=None, help="unlearning epochs for every method (default: each method's own)")
    c.add_argument("--methods", nargs="*", default=None, metavar="METHOD",
                   help=f"methods to run (default: all): {', '.join(methods)}; or a plugin's module:ATTR")
    c.add_argument("--set", dest="hp", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a hyperparameter, e.g. ga.lr=0.003 or ga+falw.tau=0.1 (repeatable)")
    c.add_argument("--data-dir", default=None, help="folder of the data set's files (CIFAR, Tiny-ImageNet, image_folder)")
    c.add_argument("--data-file", default=None, help="the .npz file of --dataset npz (MedMNIST layout)")
    c.add_argument("--store", default=DEFAULT_STORE,
                   help=f"baseline store, shared with studies (default: {DEFAULT_STORE})")
    c.add_argument("--no-store", action="store_true", help="train the baselines in memory and keep nothing")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    c.set_defaults(func=cmd_compare)

    for name, helptext in (("run", "run a study on a local Ray (or --address)"),
                           ("resume", "continue a study from its journal: recorded trials are kept, and a complete "
                                      "study runs nothing and rebuilds MLflow and its tables"),
                           ("sync", "write every trial of the study's journal to MLflow (any store); runs no trial")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("study", help="a study file, e.g. studies/quickstart.yaml")
        r.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
        r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the study's, else ./mlflow.db)")
        r.add_argument("--storage", default=None, help="where baselines and results go (default: the study's)")
        r.add_argument("--quiet", action="store_true", help="print only the final table")
        r.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and MLflow's own log lines too")
        if name == "run":
            r.add_argument("--fresh", action="store_true",
                           help="start over although the study has an unfinished journal (kept under a new name)")
        r.set_defaults(func=cmd_run)

    s = sub.add_parser("submit", help="submit a study to a Ray cluster as a job")
    s.add_argument("study")
    s.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    s.add_argument("--working-dir", default=None, help="folder uploaded with the job (default: here)")
    s.add_argument("--tracking-uri", default=None,
                   help="MLflow on the cluster: a server URI (cluster.yaml's: http://127.0.0.1:5000) or an absolute "
                        "sqlite:////PATH (default: the study's tracking.uri, which must be one of those)")
    s.add_argument("--storage", default=None,
                   help="absolute path on the cluster for baselines and results, e.g. /mnt/falw/results "
                        "(default: the study's storage, which must then be absolute)")
    s.set_defaults(func=cmd_submit)

    sl = sub.add_parser("slurm", help="run a study as a Slurm job (a Ray cluster inside the allocation); it "
                                      "continues in a follow-up job when the time limit comes")
    sl.add_argument("study")
    sl.add_argument("--nodes", type=int, default=1, help="nodes: Ray's head on the first, a worker on each other")
    sl.add_argument("--gpus-per-node", type=int, default=0)
    sl.add_argument("--cpus-per-node", type=int, default=None, help="CPUs Ray gets on each node (Slurm's default: 1)")
    sl.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    sl.add_argument("--time", default=None, help="the job's time limit, e.g. 24:00:00 (the study goes on in a "
                                                  "follow-up job when it comes)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--account", default=None)
    sl.add_argument("--qos", default=None)
    sl.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                    help="an extra #SBATCH line, e.g. --sbatch-arg=--constraint=a100 (repeatable)")
    sl.add_argument("--setup", default=None, help="a shell line run first on the node, e.g. "
                                                  "'module load cuda; source .venv/bin/activate'")
    sl.add_argument("--signal-lead", type=int, default=300,
                    help="seconds before the time limit at which the study stops and a follow-up job is queued")
    sl.add_argument("--storage", default=None, help="absolute path every node sees (default: the study's)")
    sl.add_argument("--tracking-uri", default=None, help="an MLflow server or an absolute sqlite:////PATH on shared "
                                                         "storage (default: the study's)")
    sl.add_argument("--dry-run", action="store_true", help="print the job script instead of submitting it")
    sl.add_argument("--status", action="store_true", help="which job the study is on and how far it is")
    sl.set_defaults(func=cmd_slurm)

    rp = sub.add_parser("report", help="rebuild a study's final table from MLflow alone")
    rp.add_argument("study", help="a study file or an MLflow experiment name")
    rp.add_argument("--tracking-uri", default=None)
    rp.add_argument("--run", "--run-id", dest="run_id", default=None,
                    help="a study run's id (default: the latest completed one)")
    rp.add_argument("--out", default=None,
                    help="where to write the table and plots (default: falw_results/<study>/report)")
    rp.set_defaults(func=cmd_report)

    v = sub.add_parser("validate", help="check study files or a cluster.yaml without running anything")
    v.add_argument("files", nargs="+")
    v.add_argument("--skip-data-check", action="store_true",
                   help="do not look for the scenarios' data_dir on this machine (a study whose data lives on a "
                        "cluster); `run` checks it where the study runs")
    v.set_defaults(func=cmd_validate)

    me = sub.add_parser("methods", help="list every method, preset and installed plugin method: summary, where it "
                                        "comes from, hyperparameters (default, range, searched), options (choices, "
                                        "default) and what each means")
    me.add_argument("names", nargs="*", metavar="METHOD", help="only these (default: all); module:ATTR describes a "
                                                                "plugin method in a file here")
    me.set_defaults(func=cmd_methods)

    b = sub.add_parser("baselines", help="list or prune the baseline store")
    bsub = b.add_subparsers(dest="action", required=True)
    store_help = f"the store's folder (default: {DEFAULT_STORE}; a study's is <storage>/baselines)"
    bl = bsub.add_parser("list", help="one line per entry: role, key, data set, model, forget set, seed, "
                                      "code version, size, age")
    bl.add_argument("--store", default=DEFAULT_STORE, metavar="DIR", help=store_help)
    bl.set_defaults(func=cmd_baselines_list)
    bp = bsub.add_parser("prune", help="remove entries matching every filter given, each whole and under its lock "
                                       "(an entry in use is kept)")
    bp.add_argument("--store", default=DEFAULT_STORE, metavar="DIR", help=store_help)
    bp.add_argument("--stale", action="store_true",
                    help="entries whose code version is not the current one (written before versions: '-')")
    bp.add_argument("--older-than", type=float, default=None, metavar="DAYS", help="entries written more than DAYS ago")
    bp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    bp.set_defaults(func=cmd_baselines_prune)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "hp"):
        args.hp = _parse_sets(args.hp)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
