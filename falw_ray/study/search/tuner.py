"""The study's one Tune run: every cell's search, selection and final trials, with the searcher,
early stopping per cell, and the trial function given the baselines as Ray object references."""
from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..spec import StudySpec
from .scheduler import CellScheduler, rung_epochs
from .searcher import CellSearcher

MAX_FAILURES = 5
"""Retries of a trial whose worker died: bounded, and enough for a node lost more than once."""


def searcher(spec: StudySpec, cells: list, records: dict) -> CellSearcher:
    """The searcher in the state the journal's trials put it in."""
    return CellSearcher(cells, spec.search.trials, spec.search.sampler_seed, spec.final_seeds(),
                        spec.selection.seeds, spec.selection.top_k, done=records)


def evaluated_epochs(spec: StudySpec, cells: list) -> dict | None:
    """Search trials are judged at ASHA's rungs and their last epoch, final runs at the last."""
    if spec.search.evaluate == "every_epoch":
        return None
    es = spec.early_stopping
    rungs = {c.id: rung_epochs(es.grace_period, es.reduction_factor, c.epochs) if es.enabled else [] for c in cells}
    last = {c.id: (c.epochs,) for c in cells}
    return {"search": {c.id: tuple(sorted({c.epochs, *rungs[c.id]})) for c in cells}, "select": last, "final": last}


def trial_budget(spec: StudySpec, cells: list) -> dict[str, int]:
    """Trials per stage (selection: at most, as fewer distinct configurations make fewer runs)."""
    return {"search": len(cells) * spec.search.trials,
            "select": len(cells) * spec.selection.top_k * len(spec.selection.seeds),
            "final": len(cells) * len(spec.final_seeds())}


def run_trials(spec: StudySpec, cells: list, root: Path, search_alg: CellSearcher, records: dict,
               callbacks: list, concurrency: int, shared, recorder) -> None:
    """Run every trial the journal does not hold; returns when Tune ends (all done, or interrupted)."""
    from ray import tune
    from ray.tune.error import TuneError

    from ..cluster.ship import plugin_methods
    from .trainable import unlearning_trial

    res = spec.resources
    fn = tune.with_parameters(unlearning_trial, cells={c.id: c for c in cells}, baselines=dict(shared.baselines),
                              datasets=dict(shared.datasets), threads=max(1, int(res.cpu)),
                              falw_refresh_every=spec.search.falw_refresh_every,
                              evaluate=evaluated_epochs(spec, cells), compile=spec.search.compile,
                              precision=spec.search.precision, plugins=plugin_methods(cells))
    # Tune's own experiment folder is a cache (the journal is the record): a fresh one per run.
    shutil.rmtree(root / "ray" / spec.name, ignore_errors=True)
    es = spec.early_stopping
    scheduler = CellScheduler(cells, es.grace_period, es.reduction_factor).replay(records) if es.enabled else None
    tuner = tune.Tuner(
        tune.with_resources(fn, {"cpu": res.cpu, "gpu": res.gpu}),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(root / "ray"), verbose=0, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                    num_samples=max(1, sum(trial_budget(spec, cells).values()) - len(records)),
                                    max_concurrent_trials=concurrency, reuse_actors=True))
    try:
        with _no_result_files_warning():
            tuner.fit()
    except TuneError:
        if recorder.failure is not None:  # the journal could not be written: that, not Tune's traceback
            raise recorder.failure from None
        raise


@contextmanager
def _no_result_files_warning():
    """fit() reads each trial's result files back into its ResultGrid and warns that there are none:
    the study writes none (its journal holds the results) and does not read the grid."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
