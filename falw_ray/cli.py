"""The ``falw-ray`` command line."""
from __future__ import annotations

import argparse
import sys


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
    import torch

    from .experiment import Experiment
    from .scenario import ForgetSpec, Scenario

    torch.set_num_threads(args.threads) if args.threads else None
    try:
        forget = ForgetSpec(kind=args.forget, ratio=args.ratio, gamma=args.gamma)
        scenario = Scenario(dataset=args.dataset, model=args.model, forget=forget, seed=args.seed,
                            data_dir=args.data_dir)
    except ValueError as e:
        raise SystemExit(f"falw-ray compare: {e}") from None
    exp = Experiment(scenario, device=args.device, store=None if args.no_store else args.store)
    table = exp.compare(args.methods or _compare_methods(), hp=args.hp, epochs=args.epochs)
    shown = table[["method", "falw", "fa", "ra", "ta", "mia", "avg_gap", "seconds", "rte"]].rename(columns={
        "fa": "FA", "ra": "RA", "ta": "TA", "mia": "MIA", "avg_gap": "Avg. Gap", "seconds": "Time (s)", "rte": "RTE"})
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def _compare_methods() -> list[str]:
    from .unlearn import METHODS, PRESETS

    return [m for m in METHODS if m != "retrain"] + list(PRESETS)


def _fail(err: Exception) -> int:
    print(f"falw-ray: {err}", file=sys.stderr)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    from .study.runner import Study
    from .study.spec import StudyError
    from .study.tracking import TrackingError

    try:
        study = Study.from_yaml(args.study)
        result = study.run(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage,
                           progress=not args.quiet, resume=args.command == "resume", verbose=args.verbose)
    except (StudyError, TrackingError, ValueError) as e:
        return _fail(e)
    print(result.show())
    experiment = study.spec.tracking.experiment or study.spec.name
    print(f"\nresults: {result.results_dir}\n{mlflow_hint(result.tracking_uri, experiment)}")
    return 0


def mlflow_hint(uri: str, experiment: str) -> str:
    """How to look at a study in MLflow: open the server, or serve a local store on 127.0.0.1."""
    if uri.startswith(("http://", "https://")):
        return f"MLflow:  open {uri.rstrip('/')} (experiment {experiment})"
    return (f"MLflow:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
            f"  (experiment {experiment})")


def cmd_submit(args: argparse.Namespace) -> int:
    from .study.spec import StudyError, load_study
    from .study.submit import follow_hint, submit_study

    try:
        load_study(args.study)
        extra = [a for flag, v in (("--tracking-uri", args.tracking_uri), ("--storage", args.storage)) if v for a in (flag, v)]
        job_id = submit_study(args.study, args.address, extra_args=extra, working_dir=args.working_dir)
    except (StudyError, ValueError, FileNotFoundError, ConnectionError, PermissionError) as e:
        return _fail(e)
    print(f"submitted job {job_id}")
    print(follow_hint(args.address, job_id))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .study.report import report
    from .study.results import format_table
    from .study.spec import StudyError, load_study
    from .study.tracking import TrackingError

    name, uri = args.study, args.tracking_uri
    try:
        if args.study.endswith((".yaml", ".yml")):
            spec = load_study(args.study)
            name, uri = spec.tracking.experiment or spec.name, uri or spec.tracking.uri
        table = report(name, uri, args.out, args.run_id)
    except (StudyError, TrackingError) as e:
        return _fail(e)
    print(format_table(table).to_string(index=False))
    paths = table.attrs.get("paths") or []
    if paths:
        print(f"\ntable and plots: {paths[0].parent}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from .study.spec import StudyError, load_study

    status = 0
    for path in args.files:
        try:
            with open(path) as f:
                head = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            head = None
        try:
            if isinstance(head, dict) and "provider" in head:
                from .study.cluster import validate_cluster_config

                validate_cluster_config(path)
                print(f"{path}: valid Ray cluster config")
            else:
                from .study.runner import Study

                study = Study(load_study(path), str(path))
                print(f"{path}: valid study '{study.spec.name}' ({len(study.cells)} cells x {study.spec.search.trials} trials)")
        except (StudyError, ValueError) as e:
            print(e, file=sys.stderr)
            status = 2
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="falw-ray", description="Tune and compare unlearning methods with FaLW.")
    sub = p.add_subparsers(dest="command", required=True)
    from .data.registry import DATASETS
    from .models import MODELS

    methods = _compare_methods()
    c = sub.add_parser("compare", help="run every method with and without FaLW on one scenario (no Ray) and print "
                                       "the table; baselines come from the store, trained there only once")
    c.add_argument("--dataset", default="mnist1d", choices=sorted(DATASETS), help="data set (default: mnist1d)")
    c.add_argument("--model", default=None, choices=sorted(MODELS), help="model (default: the data set's)")
    c.add_argument("--forget", default="longtail", choices=["longtail", "random"], help="forget set kind")
    c.add_argument("--ratio", type=float, default=0.1, help="forget set share of the training pool (default 0.1)")
    c.add_argument("--gamma", type=float, default=1.0, help="long-tail exponent (default 1)")
    c.add_argument("--seed", type=int, default=0, help="seed of the baselines, splits and unlearning")
    c.add_argument("--epochs", type=int, default=None, help="unlearning epochs for every method (default: each method's own)")
    c.add_argument("--methods", nargs="*", default=None, choices=methods, metavar="METHOD",
                   help=f"methods to run (default: all): {', '.join(methods)}")
    c.add_argument("--set", dest="hp", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a hyperparameter, e.g. ga.lr=0.003 or ga+falw.tau=0.1 (repeatable)")
    c.add_argument("--data-dir", default=None, help="folder of the data set's files (CIFAR, Tiny-ImageNet)")
    c.add_argument("--store", default="falw_results/baselines",
                   help="baseline store, shared with studies (default: falw_results/baselines)")
    c.add_argument("--no-store", action="store_true", help="train the baselines in memory and keep nothing")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when there is one)")
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    c.set_defaults(func=cmd_compare)

    for name, helptext in (("run", "run a study on a local Ray (or --address)"),
                           ("resume", "continue an interrupted study: finished trials are kept")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("study", help="a study file, e.g. studies/quickstart.yaml")
        r.add_argument("--address", default=None, help="a running Ray cluster (default: start a local one)")
        r.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the study's, else ./mlflow.db)")
        r.add_argument("--storage", default=None, help="where baselines and results go (default: the study's)")
        r.add_argument("--quiet", action="store_true", help="print only the final table")
        r.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and MLflow's own log lines too")
        r.set_defaults(func=cmd_run)

    s = sub.add_parser("submit", help="submit a study to a Ray cluster as a job")
    s.add_argument("study")
    s.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    s.add_argument("--working-dir", default=None, help="folder uploaded with the job (default: here)")
    s.add_argument("--tracking-uri", default=None)
    s.add_argument("--storage", default=None)
    s.set_defaults(func=cmd_submit)

    rp = sub.add_parser("report", help="rebuild a study's final table from MLflow alone")
    rp.add_argument("study", help="a study file or an MLflow experiment name")
    rp.add_argument("--tracking-uri", default=None)
    rp.add_argument("--run-id", default=None, help="a study run (default: the latest)")
    rp.add_argument("--out", default=None,
                    help="where to write the table and plots (default: falw_results/<study>/report)")
    rp.set_defaults(func=cmd_report)

    v = sub.add_parser("validate", help="check study files or a cluster.yaml without running anything")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "hp"):
        args.hp = _parse_sets(args.hp)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
