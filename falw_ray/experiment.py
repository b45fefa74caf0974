"""One unlearning experiment without Ray: baselines, a method with or without FaLW, metrics and gaps."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .baselines import Baselines, model_from, store_baselines, tensors_for, train_baselines
from .columns import MEASURED, RETRAIN_ROW
from .console import printer
from .data.registry import load_dataset
from .metrics import evaluate, gaps
from .scenario import Scenario
from .store import DEFAULT_STORE
from .train import pick_device
from .unlearn import DivergedError, preset_options, resolve, retrain, unlearn

UNLEARN_BATCH_SIZE = {"digits": 64, "mnist1d": 64}
"""Unlearning batch size per data set; others use 512, the reference recipe's."""


@dataclass
class RunResult:
    method: str
    falw: bool
    hp: dict
    options: dict
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
            **{k: self.metrics[k] for k in MEASURED}, **self.gaps, "seconds": self.seconds, "rte": self.rte,
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
    options: Mapping[str, str] | None = None,
    precision: str = "fp32",
) -> RunResult:
    """Unlearn from the original model with ``method`` and judge it against the retrained model after
    every epoch, or only after the (1-based) ``eval_epochs`` and the last: evaluation is a forward
    pass over every split plus the MIA's SVC fit, often dearer than an unlearning epoch.

    ``on_epoch`` receives a dict per evaluated epoch (epoch, metrics, gaps, elapsed unlearning
    seconds): the hook a scheduler reports through. Run time excludes evaluation. ``compile``
    compiles the model with torch.compile first; ``options`` are the method's choices (defaults
    per data set and preset) and ``precision`` its arithmetic (see ``unlearn``).
    """
    m, falw_on = resolve(method, falw)
    scenario = baselines.scenario
    device = pick_device(device)
    data = data if data is not None else load_dataset(*scenario.data_args())
    t = tensors if tensors is not None else tensors_for(baselines, device, data)
    model = model_from(scenario, data, baselines.original, device)
    if m.name == "retrain":
        m = retrain.for_scenario(scenario)  # the scenario's recipe and model: the retrained baseline itself
    hp_full = m.resolve(hp, falw_on)
    opts = m.resolve_options(preset_options(method, options), t.dataset)
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
        row = {"epoch": epoch + 1, **{k: metrics[k] for k in MEASURED}, **gaps(metrics, reference),
               "elapsed": elapsed, "fa_per_class": metrics["fa_per_class"]}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        # Stopped after the callback: time spent reporting (waiting in tune.report) is not unlearning.
        clock["eval"] += time.perf_counter() - tick

    unlearn(model, m, t, hp=hp_full, falw=falw_on, epochs=epochs,
            batch_size=batch_size or UNLEARN_BATCH_SIZE.get(scenario.dataset, 512),
            seed=scenario.seed if seed is None else seed, falw_refresh_every=falw_refresh_every, on_epoch=report,
            compile=compile, options=opts, precision=precision)
    last = history[-1]
    final = {k: last[k] for k in (*MEASURED, "fa_per_class")}
    seconds = last["elapsed"]
    return RunResult(
        method=method, falw=falw_on, hp=hp_full, options=opts,
        metrics=final, gaps=gaps(final, reference), seconds=seconds,
        rte=seconds / baselines.retrain_seconds if baselines.retrain_seconds else float("nan"), history=history,
        model=model,
    )


class Experiment:
    """A scenario with its baselines from the content-addressed store (trained there once, then
    reused by every later call, study or script), ready to run methods against.

    ``store`` is the store's folder (default ``falw_results/baselines`` under the working directory,
    the one studies use); ``store=None`` trains both baselines in memory and keeps nothing.

    >>> exp = Experiment(Scenario(dataset="mnist1d"))
    >>> exp.run("salun", falw=True).gaps["avg_gap"]  # doctest: +SKIP
    """

    def __init__(self, scenario: Scenario | Mapping | None = None, baselines: Baselines | None = None, device=None,
                 store: str | os.PathLike | None = DEFAULT_STORE, progress: bool = True):
        if scenario is None and baselines is not None:
            scenario = baselines.scenario
        if isinstance(scenario, Mapping) or scenario is None:
            scenario = Scenario(**(scenario or {}))
        self.scenario = scenario
        self.device = pick_device(device)
        self.store = Path(store).expanduser().resolve() if store is not None else None
        self.say = printer(progress)
        self._baselines = baselines
        self.cache: dict[str, str] = {}
        self._tensors = None

    @property
    def baselines(self) -> Baselines:
        if self._baselines is None:
            started = time.perf_counter()
            tick = _Every(2.0)

            def progress(role: str, epoch: int, epochs: int) -> None:
                if tick() or epoch == epochs:
                    self.say(f"training the {role} model: epoch {epoch}/{epochs}")

            if self.store is None:
                self._baselines = train_baselines(self.scenario, self.device, progress)
                self.cache = {"original": "trained", "retrained": "trained"}
            else:
                from .store import BaselineStore

                self._baselines, events = store_baselines(self.scenario, BaselineStore(self.store), self.device,
                                                          log=self.say, progress=progress)
                self.cache = {role: events[role] for role in ("original", "retrained")}
            self.say(f"baselines of {self.scenario.name}: original {self.cache['original']}, retrained "
                     f"{self.cache['retrained']} ({time.perf_counter() - started:.1f}s; store: {self.store or 'none'})")
        return self._baselines

    def run(self, method: str, falw: bool | None = None, **kwargs) -> RunResult:
        if self._tensors is None:
            self._tensors = tensors_for(self.baselines, self.device)
        return run_method(self.baselines, method, falw, device=self.device, tensors=self._tensors, **kwargs)

    def compare(self, methods: Iterable[str], falw: Iterable[bool] = (False, True), hp: Mapping | None = None, **kwargs):
        """A table (pandas DataFrame) of Retrain, the original model ("do nothing") and every method
        with and without FaLW; ``hp`` maps a method name (or ``name+falw``) to its hyperparameters.
        Each run prints a line as it ends."""
        import pandas as pd

        from .metrics import gaps as gaps_to
        from .unlearn import PRESETS, get_method, method_name

        b = self.baselines
        rows = [{"method": "retrain", "falw": "-", **{k: b.retrained_metrics[k] for k in MEASURED}, **RETRAIN_ROW,
                 "seconds": b.retrain_seconds},
                {"method": "original", "falw": "-", **{k: b.original_metrics[k] for k in MEASURED},
                 **gaps_to(b.original_metrics, b.retrained_metrics), "seconds": 0.0, "rte": 0.0}]
        for given in methods:
            name = method_name(given)  # a plugin's module:ATTR is shown by the method's own name
            modes = [PRESETS[name][1]] if name in PRESETS else [on for on in falw if not on or get_method(name).forget_term]
            for on in modes:
                params = dict((hp or {}).get(name, {}))
                if on and name not in PRESETS:
                    params.update((hp or {}).get(f"{name}+falw", {}))
                r = self.run(name, on, hp=params, **kwargs)
                self.say(f"{name:<18} falw {'on ' if on else 'off'}  Avg. Gap {r.gaps['avg_gap']:6.2f}  ({r.seconds:.1f}s)")
                rows.append({**r.row(), "falw": "on" if on else "off"})
        return pd.DataFrame(rows)


class _Every:
    """True at most once per ``seconds``: progress lines for a person, not a log flood."""

    def __init__(self, seconds: float):
        self.seconds, self.last = seconds, 0.0

    def __call__(self) -> bool:
        now = time.perf_counter()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False
