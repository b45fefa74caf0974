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
    import pandas as pd
    import torch

    from .experiment import Experiment
    from .scenario import ForgetSpec, Scenario
    from .unlearn import METHODS

    torch.set_num_threads(args.threads) if args.threads else None
    try:
        forget = ForgetSpec(kind=args.forget, ratio=args.ratio, gamma=args.gamma)
        scenario = Scenario(dataset=args.dataset, model=args.model, forget=forget, seed=args.seed,
                            data_dir=args.data_dir)
    except ValueError as e:
        raise SystemExit(f"falw-ray compare: {e}") from None
    methods = args.methods or [m for m in METHODS if m != "retrain"]
    exp = Experiment(scenario, device=args.device)
    print(f"scenario {scenario.name}: training original and retrained models ...", file=sys.stderr, flush=True)
    b = exp.baselines
    print(f"  original {b.original_seconds:.1f}s, retrained {b.retrain_seconds:.1f}s", file=sys.stderr, flush=True)
    rows = []
    for name in methods:
        for on in (False, True):
            if on and not METHODS[name].forget_term:
                continue
            hp = dict(args.hp.get(name, {}), **(args.hp.get(f"{name}+falw", {}) if on else {}))
            r = exp.run(name, on, hp=hp, epochs=args.epochs)
            print(f"  {name:<20} falw={'on ' if on else 'off'} avg_gap {r.gaps['avg_gap']:6.2f}  ({r.seconds:.1f}s)",
                  file=sys.stderr, flush=True)
            rows.append(r.row())
    ref = {"method": "retrain", "falw": False, **{k: b.retrained_metrics[k] for k in ("fa", "ra", "ta", "mia")},
           "avg_gap": 0.0, "seconds": b.retrain_seconds, "rte": 1.0}
    table = pd.DataFrame([ref, *rows])[["method", "falw", "fa", "ra", "ta", "mia", "avg_gap", "seconds", "rte"]]
    table["falw"] = table["falw"].map({True: "on", False: "off"})
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="falw-ray", description="Tune and compare unlearning methods with FaLW.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run every method with and without FaLW on one scenario and print the table")
    c.add_argument("--dataset", default="digits")
    c.add_argument("--model", default=None)
    c.add_argument("--forget", default="longtail", choices=["longtail", "random"])
    c.add_argument("--ratio", type=float, default=0.1)
    c.add_argument("--gamma", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=None, help="unlearning epochs for every method (default: each method's own)")
    c.add_argument("--methods", nargs="*", default=None)
    c.add_argument("--set", dest="hp", action="append", default=[], metavar="METHOD.PARAM=VALUE")
    c.add_argument("--data-dir", default=None)
    c.add_argument("--device", default=None)
    c.add_argument("--threads", type=int, default=None)
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "hp"):
        args.hp = _parse_sets(args.hp)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
