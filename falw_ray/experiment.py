"""One unlearning experiment without Ray: baselines, a method with or without FaLW, metrics and gaps."""
from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .baselines import Baselines, model_from, tensors_for, train_baselines
from .data.registry import load_dataset
from .metrics import SUMMARY, evaluate, gaps
from .scenario import Scenario
from .train import pick_device
from .unlearn import DivergedError, resolve, unlearn

UNLEARN_BATCH_SIZE = {"digits": 64, "mnist1d": 64}
"""Unlearning batch size per data set; others use 512, the reference recipe's."""


@dataclass
class RunResult:
    method: str
    falw: bool
    hp: dict
    metrics: dict
    gaps: dict
    seconds: float
    rte: float
    history: list[dict] = field(default_factory=list)
    model: torch.nn.Module | None = field(default=None, repr=False)

    def row(self) -> dict:
        """A flat record: method, FaLW, the four metrics, their gaps, Avg. Gap, time, RTE."""
        return {
            "method": self.method, "falw": self.falw,
            **{k: self.metrics[k] for k in SUMMARY}, **self.gaps, "seconds": self.seconds, "rte": self.rte,
        }


def run_method(
    baselines: Baselines,
    method: str,
    falw: bool | None = None,
    hp: Mapping | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    falw_refresh_every: int = 1,
    on_epoch: Callable[[dict], None] | None = None,
    tensors=None,
    data=None,
    eval_epochs: Collection[int] | None = None,
    compile: bool = False,
) -> RunResult:
    """Unlearn from the original model with ``method`` and judge it against the retrained model after
    every epoch, or only after the (1-based) ``eval_epochs`` and the last: evaluation is a forward
    pass over every split plus the MIA's SVC fit, often dearer than an unlearning epoch.

    ``on_epoch`` receives a dict per evaluated epoch (epoch, metrics, gaps, elapsed unlearning
    seconds): the hook a scheduler reports through. Run time excludes evaluation. ``compile``
    compiles the model with torch.compile first (see ``unlearn``).
    """
    m, falw_on = resolve(method, falw)
    scenario = baselines.scenario
    device = pick_device(device)
    data = data if data is not None else load_dataset(*scenario.data_args())
    t = tensors if tensors is not None else tensors_for(baselines, device, data)
    model = model_from(scenario, data, baselines.original, device)
    hp_full = m.resolve(hp, falw_on)
    if m.name == "retrain":
        hp_full = {"lr": scenario.recipe.lr, "epochs": scenario.recipe.epochs, **dict(hp or {})}
    total = int(epochs if epochs is not None else hp_full["epochs"])
    wanted = None if eval_epochs is None else {int(e) for e in eval_epochs} | {total}
    history: list[dict] = []
    clock = {"eval": 0.0, "start": time.perf_counter()}
    reference = baselines.retrained_metrics

    def report(epoch: int, model) -> None:
        if wanted is not None and epoch + 1 not in wanted:
            return
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        elapsed = tick - clock["start"] - clock["eval"]
        try:
            metrics = evaluate(model, t)
        except FloatingPointError as e:
            raise DivergedError(f"{m.name}: {e} after epoch {epoch + 1}") from None
        row = {"epoch": epoch + 1, **{k: metrics[k] for k in SUMMARY}, **gaps(metrics, reference),
               "elapsed": elapsed, "fa_per_class": metrics["fa_per_class"]}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        # Stopped after the callback: time spent reporting (waiting in tune.report) is not unlearning.
        clock["eval"] += time.perf_counter() - tick

    unlearn(model, m, t, hp=hp_full, falw=falw_on, epochs=epochs,
            batch_size=batch_size or UNLEARN_BATCH_SIZE.get(scenario.dataset, 512),
            seed=scenario.seed if seed is None else seed, falw_refresh_every=falw_refresh_every, on_epoch=report,
            compile=compile)
    last = history[-1]
    final = {k: last[k] for k in (*SUMMARY, "fa_per_class")}
    seconds = last["elapsed"]
    return RunResult(
        method=method, falw=falw_on, hp=hp_full,
        metrics=final, gaps=gaps(final, reference), seconds=seconds,
        rte=seconds / baselines.retrain_seconds if baselines.retrain_seconds else float("nan"), history=history,
        model=model,
    )


class Experiment:
    """A scenario with its baselines trained (or given) once, ready to run methods against.

    >>> exp = Experiment(Scenario(dataset="digits"))
    >>> exp.run("salun", falw=True).gaps["avg_gap"]  # doctest: +SKIP
    """

    def __init__(self, scenario: Scenario | Mapping | None = None, baselines: Baselines | None = None, device=None):
        if scenario is None and baselines is not None:
            scenario = baselines.scenario
        if isinstance(scenario, Mapping) or scenario is None:
            scenario = Scenario(**(scenario or {}))
        self.scenario = scenario
        self.device = pick_device(device)
        self._baselines = baselines
        self._tensors = None

    @property
    def baselines(self) -> Baselines:
        if self._baselines is None:
            self._baselines = train_baselines(self.scenario, self.device)
        return self._baselines

    def run(self, method: str, falw: bool | None = None, **kwargs) -> RunResult:
        if self._tensors is None:
            self._tensors = tensors_for(self.baselines, self.device)
        return run_method(self.baselines, method, falw, device=self.device, tensors=self._tensors, **kwargs)

    def compare(self, methods: Iterable[str], falw: Iterable[bool] = (False, True), hp: Mapping | None = None, **kwargs):
        """A table (pandas DataFrame) of every method with and without FaLW, plus Retrain's own row.
        ``hp`` maps a method name to its hyperparameters."""
        import pandas as pd

        from .unlearn import get_method

        rows = [{"method": "retrain (reference)", "falw": False,
                 **{k: self.baselines.retrained_metrics[k] for k in SUMMARY}, "avg_gap": 0.0,
                 "seconds": self.baselines.retrain_seconds, "rte": 1.0}]
        for name in methods:
            for on in falw:
                if on and not get_method(name).forget_term:
                    continue
                params = dict((hp or {}).get(name, {}))
                if on:
                    params.update((hp or {}).get(f"{name}+falw", {}))
                rows.append(self.run(name, on, hp=params, **kwargs).row())
        return pd.DataFrame(rows)
