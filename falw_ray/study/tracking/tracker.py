"""MLflow tracking: one experiment per study, a study run, baseline runs and a nested run per trial.

All writes go through an ``MlflowClient`` on the driver (no global active-run state), so runs of
trials that a scheduler stops early are closed like any other and none is left RUNNING.

Per-class forget accuracy (the deviation plots' data) is logged as metrics ``fa_class_00`` ...
``fa_class_NN`` (zero-padded to at least two digits, NaN for a class with no forget sample) on
every baseline run and, at its last epoch, on every final-stage trial run, so that
``falw-ray report`` can redraw the plots from the MLflow store alone.

The experiment also carries three shared views of MLflow's runs table (experiment tags
``mlflow.sharedViewState.falw-cells``, ``...falw-final`` and ``...falw-search``, MLflow's own "share
view" mechanism), each opened by
``<server>/#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=<key>``
(:meth:`Tracker.view_url`). ``falw-cells`` ranks one row per cell by its mean Avg. Gap over the
final seeds, with Retrain's row (gap 0) and the original model's ("do nothing") among them, so that
every method is read against both; ``falw-final`` groups the final-stage trial runs by cell (the
group row is the mean over seeds); ``falw-search`` lists the search stage's trial runs.

MLflow 3.17's UI picks between its GenAI pages and its model-training pages from the
``workflowType`` URL parameter, else from a per-browser setting (the "GenAI | Model training"
switch at the top of its sidebar, GenAI by default): it does not read the experiment's
``mlflow.experimentKind`` tag for this, so no experiment setting can make a fresh browser open the
runs; the views' addresses carry ``workflowType=machine_learning``, and :meth:`Tracker.experiment_url`
is the experiment's own page in model-training mode.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from requests.exceptions import RequestException
from mlflow.tracking import MlflowClient

from ...columns import EPOCH_METRICS, MEASURED, OBJECTIVE, RUN_PARAMS, TABLE_METRICS
from ...console import first_line
from ..record.trials import ERROR, scenario_label, stage_config, trial_stage

PARENT = "mlflow.parentRunId"


PER_CLASS_PREFIX = "fa_class_"
SEARCH_SPACE = "search_space.json"
SHARED_VIEW_TAG = "mlflow.sharedViewState."
EXPERIMENT_KIND = "mlflow.experimentKind"
VIEWS = {"falw-cells": "cell", "falw-final": "final", "falw-search": "search"}
CELL_VIEW = ("view", "cells")
"""Tag on the rows of the ``falw-cells`` view: every cell run and the reference runs (MLflow's run
search has no OR, and no IN on tags)."""
REFERENCES = {"retrain": "Retrain", "original": "original (do nothing)"}
"""The reference rows of the cells view: the final table's ``method`` -> their run's name."""
GROUP = "cell_name"
"""Tag on trial runs: their cell's run name, by which the ``falw-final`` view groups them."""
"""Shared runs-table views this module keeps on every study's experiment, each scoped to the latest
study run: key -> what it lists (one run per cell, or a stage's trial runs)."""
STUDY_RUN = "study_run"
"""Tag naming the study run a baseline, cell or trial run belongs to (trial runs nest under their cell)."""
JOURNAL = "journal"
"""Tag naming the journal (its header's id) a study run mirrors: resume and sync find the run by it."""


def per_class_metrics(values) -> dict[str, float]:
    """``fa_per_class`` as MLflow metrics: ``fa_class_00`` ... (NaN kept for classes with no sample)."""
    values = [float("nan") if v is None else float(v) for v in (values or [])]
    width = max(2, len(str(len(values) - 1)))
    return {f"{PER_CLASS_PREFIX}{i:0{width}d}": v for i, v in enumerate(values)}


def per_class_from_metrics(metrics: dict) -> list[float] | None:
    """The inverse of :func:`per_class_metrics`: the per-class FA list, class 0 first, or None."""
    found = {}
    for k, v in metrics.items():
        if k.startswith(PER_CLASS_PREFIX) and k[len(PER_CLASS_PREFIX):].isdigit():
            found[int(k[len(PER_CLASS_PREFIX):])] = float(v)
    if not found:
        return None
    return [found.get(i, float("nan")) for i in range(max(found) + 1)]


def view_state(stage: str, study_run: str | None = None) -> dict:
    """One shared view of the runs table, best Avg. Gap first. MLflow places a view's metric columns
    first (alphabetically), then its parameters, then its tags, after Run Name, Created and Duration,
    100 pixels each: so ``cell`` shows only the metrics that rank the rows (mean and std of Avg. Gap
    over the final seeds; ``falw_diff`` and the rest are on the runs, a click away), so that the
    chosen ``lr`` and ``tau`` stay on the first screen of a 1600-pixel window even with MLflow's
    assistant panel open; it lists every cell and the reference rows (Retrain, the original model). A stage lists its trial runs; ``final`` grouped by cell (the group row averages
    the seeds). Scoped to ``study_run`` when given (the latest run of the study), so repeated runs do
    not mix."""
    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    scope = f" and tags.{STUDY_RUN} = '{study_run}'" if study_run else ""
    if stage == "cell":
        return {
            "searchFilter": f"tags.{CELL_VIEW[0]} = '{CELL_VIEW[1]}'{scope}",
            "orderByKey": col("metrics", OBJECTIVE),
            "orderByAsc": True,
            "selectedColumns": [
                *(col("metrics", k) for k in (OBJECTIVE, f"{OBJECTIVE}_std")),
                *(col("params", k) for k in ("lr", "tau")),
                *(col("tags", k) for k in ("method", "falw", "scenario")),
            ],
        }
    state = {
        "searchFilter": f"tags.kind = 'trial' and tags.stage = '{stage}'{scope}",
        "orderByKey": col("metrics", OBJECTIVE),
        "orderByAsc": True,
        "selectedColumns": [
            col("metrics", OBJECTIVE), *(col("params", k) for k in ("seed", "lr", "tau")),
            *(col("metrics", k) for k in MEASURED),
            *(col("tags", k) for k in ("method", "falw", "scenario", "best")),
        ],
    }
    if stage == "final":
        state["groupBy"] = {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": GROUP}]}
    return state


def cell_run_name(cell, cells: dict) -> str:
    """A cell's run name: its method (``ga+falw``) first and alone when the study has one scenario,
    so that MLflow's 190-pixel Run Name column shows it whole; ``<method> | <scenario>`` otherwise."""
    if len({scenario_label(c.scenario) for c in cells.values()}) <= 1:
        return cell.label
    return f"{cell.label} | {scenario_label(cell.scenario)}"


def default_tracking_uri() -> str:
    """A SQLite file in the working directory: no server needed."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class TrackingError(RuntimeError):
    pass


TRACKING_ERRORS = (MlflowException, RequestException, OSError, TrackingError)
"""What a write to an unreachable or failing MLflow store raises (after MLflow's own retries)."""


@contextmanager
def _no_retries():
    """MLflow's HTTP client retries for minutes by default: a check at start wants an answer now."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Tracker:
    def __init__(self, uri: str | None, experiment: str, artifact_root: Path | None = None):
        self.uri = uri or default_tracking_uri()
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.study_run: str | None = None
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """Made on first use: an MLflow client of a SQLite store creates the file, which :meth:`check`
        must not do."""
        if self._client is None:
            try:
                self._client = MlflowClient(tracking_uri=self.uri)
            except Exception as e:  # noqa: BLE001 - any failure to open the store is the one line below
                raise TrackingError(f"MLflow tracking at {self.uri} is unreachable: {first_line(e)}") from None
        return self._client

    def __getstate__(self) -> dict:
        """Tune pickles its run config (and so this tracker) with the experiment: keep only the address."""
        return {k: v for k, v in self.__dict__.items() if k != "_client"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client = None

    def resume_study(self, journal: str | None) -> str | None:
        """Reopen the study run that mirrors the journal with id ``journal`` (its ``journal`` tag),
        finished or not, so a resumed study writes into it; None where this store has none (a new
        store: the study's run is made anew and filled from the journal). A journal written before
        headers (``journal`` None) reopens the latest study run if it did not finish."""
        if journal is None:
            run_id = self.latest_study_run()
            if run_id is None or self.client.get_run(run_id).info.status == "FINISHED":
                return None
        else:
            runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.kind = 'study' and "
                                           f"tags.{JOURNAL} = '{journal}'", order_by=["attributes.start_time DESC"],
                                           max_results=1)
            if not runs:
                return None
            run_id = runs[0].info.run_id
        self.client.update_run(run_id, status="RUNNING")
        self.study_run = run_id
        self._set_views()
        return run_id

    def sync_trials(self, records: dict[str, dict], cells: dict) -> tuple[dict[str, str], int]:
        """Make the study run's trial runs match the journal (``records``): exactly one complete run
        per recorded trial (every reported epoch logged, closed FINISHED, or FAILED for an error);
        a missing or partial one is rebuilt from its record, duplicates and runs of trials the
        journal does not hold (cut off by a crash, to be run again) are deleted. Returns
        (trial id -> run id, how many runs were rebuilt)."""
        by_trial: dict[str, list] = {}
        for run in self.children(self.study_run, "trial"):
            by_trial.setdefault(run.data.tags.get("trial_id"), []).append(run)
        for trial_id, runs in by_trial.items():
            if trial_id not in records:
                for run in runs:
                    self.client.delete_run(run.info.run_id)
        cell_runs = self.cell_runs()
        out, rebuilt = {}, 0
        for trial_id, record in records.items():
            runs = by_trial.get(trial_id, [])
            keep = next((r for r in runs if self._complete(r, record)), None)
            for run in runs:
                if run is not keep:
                    self.client.delete_run(run.info.run_id)
            if keep is None:
                out[trial_id] = self.write_trial(record, cells, cell_runs)
                rebuilt += 1
            else:
                out[trial_id] = keep.info.run_id
        return out, rebuilt

    def _complete(self, run, record: dict) -> bool:
        expected = "FAILED" if record["status"] == ERROR else "FINISHED"
        if run.info.status != expected:
            return False
        steps = {int(r.get("epoch", 0)) for r in record["history"] if OBJECTIVE in r}
        return steps == {m.step for m in self.client.get_metric_history(run.info.run_id, OBJECTIVE)}

    def write_trial(self, record: dict, cells: dict, cell_runs: dict) -> str:
        """A completed trial's whole run from its journal record, closed as it ended."""
        cell = cells[stage_config(record["config"])["cell"]]
        if cell.id not in cell_runs:
            cell_runs[cell.id] = self.cell_run(cell, cells)
        name, params, tags = trial_run(record["config"], cells, record["trial_id"])
        run = self.start_run(name, parent=cell_runs[cell.id], params=params, tags=tags)
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(r.get("epoch", 0))) for r in record["history"]
                 for k, v in r.items() if k in EPOCH_METRICS and isinstance(v, (int, float))]
        for start in range(0, len(batch), 900):
            self.client.log_batch(run, metrics=batch[start:start + 900])
        self.end_trial(run, record, cell)
        return run

    def end_trial(self, run_id: str, record: dict, cell) -> None:
        """Close a trial's run as its journal record ended (see :func:`closing`)."""
        tags, metrics = closing(record, cell)
        self.tag(run_id, tags)
        if metrics:
            self.log_metrics(run_id, metrics, step=int(record["result"].get("epoch", 0)))
        self.end(run_id, "FAILED" if record["status"] == ERROR else "FINISHED")

    def check(self) -> None:
        """Whether the store can be reached, without writing to it: a SQLite file's folder must exist
        and be writable; a server must answer. Cheap, so it runs before Ray starts."""
        if self.uri.startswith("sqlite:///"):
            folder = Path(self.uri.removeprefix("sqlite:///")).expanduser().parent
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise TrackingError(f"MLflow tracking at {self.uri}: the folder {folder} does not exist or is not "
                                    "writable")
            return
        if self.uri.startswith(("http://", "https://")):
            with _no_retries():
                try:
                    self.client.search_experiments(max_results=1)
                except Exception as e:  # noqa: BLE001 - any failure to answer is the one-line error below
                    raise TrackingError(f"MLflow tracking at {self.uri} is unreachable: {first_line(e)}") from None
            return
        self.client  # noqa: B018 - other schemes: an unknown one or an unreachable database fails here

    def connect(self) -> None:
        """Reach the store and create the experiment, before any compute starts."""
        with _no_retries():
            self._experiment()

    def _experiment(self):
        """The study's experiment, created if new; any failure is one line naming the store."""
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = None
                if self.artifact_root is not None and not self.uri.startswith(("http://", "https://", "databricks")):
                    location = (self.artifact_root / self.experiment_name).resolve().as_uri()
                self.experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as e:  # noqa: BLE001 - whatever the store raises, the study stops with one line
            raise TrackingError(f"MLflow tracking at {self.uri} is unreachable: {first_line(e)}") from None
        return exp

    def _set_views(self) -> None:
        try:
            self._ensure_views(self.client.get_experiment(self.experiment_id))
        except TRACKING_ERRORS as e:  # a read-only or older server: the runs are logged all the same
            warnings.warn(f"falw_ray: could not set the experiment's shared MLflow views: {first_line(e)}",
                          RuntimeWarning, stacklevel=2)

    def _ensure_views(self, exp) -> None:
        """Keep the experiment's shared runs-table views (see the module docstring) scoped to the
        current study run, and mark it a model-training experiment."""
        have = exp.tags if exp is not None else {}
        if EXPERIMENT_KIND not in have:  # what MLflow's own experiment settings say (not which page opens)
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, "custom_model_development")
        for key, stage in VIEWS.items():
            value = json.dumps(view_state(stage, self.study_run))
            if have.get(SHARED_VIEW_TAG + key) != value:
                self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG + key, value)

    def view_url(self, server: str, stage: str = "cell") -> str:
        """The address of a shared view (``cell``, or a stage) on an MLflow server (e.g. http://127.0.0.1:5000)."""
        key = next(k for k, v in VIEWS.items() if v == stage)
        return (f"{server.rstrip('/')}/#/experiments/{self.experiment_id}/runs"
                f"?workflowType=machine_learning&viewStateShareKey={key}")

    def experiment_url(self, server: str) -> str:
        """The experiment's own page, in MLflow's model-training mode (its runs, not the GenAI overview)."""
        return f"{server.rstrip('/')}/#/experiments/{self.experiment_id}?workflowType=machine_learning"

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None, parent: str | None = None) -> str:
        all_tags = dict(tags or {})
        if parent:
            all_tags[PARENT] = parent
        if self.study_run and all_tags.get("kind") != "study":
            all_tags.setdefault(STUDY_RUN, self.study_run)
        run = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
        if params:
            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def tag(self, run_id: str, tags: dict) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def start_study(self, name: str, params: dict, journal: str) -> str:
        """The study's run, tagged with its journal's id (see :meth:`resume_study`)."""
        self.study_run = self.start_run(name, params=params, tags={"kind": "study", JOURNAL: journal})
        self._set_views()
        return self.study_run

    def cell_run(self, cell, cells: dict) -> str:
        """A run for one cell under the study run; its trials nest under it."""
        return self.start_run(cell_run_name(cell, cells), parent=self.study_run,
                              params={k: v for k, v in cell.fixed.items()},
                              tags={"kind": "cell", "cell": cell.id, "method": cell.method,
                                    "falw": "on" if cell.falw else "off", "scenario": cell.scenario.name,
                                    "label": scenario_label(cell.scenario), CELL_VIEW[0]: CELL_VIEW[1]})

    def cell_runs(self) -> dict[str, str]:
        """cell id -> its run in the current study run (a resumed study keeps them)."""
        return {r.data.tags["cell"]: r.info.run_id for r in self.children(self.study_run, "cell")}

    def log_cell(self, run_id: str, hp: dict, metrics: dict) -> None:
        """A cell's outcome on its run: the chosen hyperparameters and the final seeds' summary (and
        the cells view's tag, which runs made before it existed lack)."""
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in hp.items()],
                              tags=[RunTag(*CELL_VIEW)])
        self.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v})

    def log_references(self, table, cells: dict) -> dict[tuple[str, str], str]:
        """Retrain's and the original model's rows of the final table (``table``: mean and std over
        the final seeds per scenario) as runs beside the cells, tagged for the cells view: the rows
        every cell is judged against (Retrain's Avg. Gap is 0; the original's is what doing nothing
        scores). A study that ends again (resumed, or rerun complete) updates the same runs.
        Returns (scenario label, method) -> run id."""
        scenarios = {scenario_label(c.scenario): c.scenario for c in cells.values()}
        several = len(scenarios) > 1
        have = {(r.data.tags.get("label"), r.data.tags.get("method")): r.info.run_id
                for r in self.children(self.study_run, "reference")}
        out = {}
        for row in table[table["method"].isin(list(REFERENCES))].itertuples(index=False):
            row = row._asdict()
            key = (row["scenario"], row["method"])
            name = REFERENCES[row["method"]] + (f" | {row['scenario']}" if several else "")
            scenario = scenarios.get(row["scenario"])
            run = have.get(key) or self.start_run(
                name, parent=self.study_run,
                tags={"kind": "reference", "method": row["method"], "falw": "-", "label": row["scenario"],
                      "scenario": scenario.name if scenario is not None else row["scenario"],
                      CELL_VIEW[0]: CELL_VIEW[1]})
            metrics = {"seeds": row.get("seeds")}
            for k in TABLE_METRICS:
                metrics[k], metrics[f"{k}_std"] = row.get(f"{k}_mean"), row.get(f"{k}_std")
            self.log_metrics(run, {k: float(v) for k, v in metrics.items() if v is not None and v == v})
            self.end(run)
            out[key] = run
        return out

    def log_baseline(self, scenario, label: str, role: str, metrics: dict, seconds: float, cache: str) -> str:
        run = self.start_run(
            f"baseline/{scenario.name}/{role}", parent=self.study_run,
            params={"dataset": scenario.dataset, "model": scenario.model, "forget": scenario.forget.label,
                    "seed": scenario.seed, "role": role, "label": label},
            tags={"kind": "baseline", "role": role, "scenario": scenario.name, "cache": cache},
        )
        self.log_metrics(run, {**{k: metrics[k] for k in MEASURED}, "train_seconds": seconds,
                               **per_class_metrics(metrics.get("fa_per_class"))})
        self.end(run)
        return run

    def log_outcome(self, paired, original, warnings: list[str]) -> None:
        """The study's answers on its run: each paired difference (``paired.<scenario>.<b>_vs_<a>.mean``,
        ``.ci_low``, ``.ci_high``, ``.wins``, ``.n``, ``.p_value``), the original model's mean Avg. Gap
        per scenario (``original.<scenario>.avg_gap``: doing nothing), and range warnings as a tag."""
        metrics = {}
        for r in paired.itertuples():
            key = f"paired.{mlflow_key(r.scenario)}.{mlflow_key(r.b)}_vs_{mlflow_key(r.a)}"
            for field in ("mean", "ci_low", "ci_high", "wins", "n", "p_value"):
                metrics[f"{key}.{field}"] = getattr(r, field)
        if original is not None and len(original):
            for scenario, rows in original.groupby("scenario", sort=False):
                metrics[f"original.{mlflow_key(scenario)}.{OBJECTIVE}"] = float(rows[OBJECTIVE].mean())
        self.log_metrics(self.study_run, {k: v for k, v in metrics.items() if v == v})
        if warnings:
            self.tag(self.study_run, {"edge_warnings": "\n".join(warnings)})

    def log_search_space(self, cells: dict) -> None:
        """Each cell's searched hyperparameters and their ranges, as ``search_space.json`` on the study
        run: the search plots that ``falw-ray report`` redraws use the same axes as the study's."""
        space = {cid: {name: {"low": p.low, "high": p.high, "log": bool(p.log), "integer": bool(p.integer)}
                       for name, p in cell.space.items()} for cid, cell in cells.items()}
        self.client.log_dict(self.study_run, space, SEARCH_SPACE)

    def search_space(self, study_run: str) -> dict | None:
        """What :meth:`log_search_space` wrote: cell id -> {name: Param-like}; None for a study run
        without it (one tracked before search_space.json existed: the report infers the space). A
        store that fails to answer, or a file that is not the JSON it should be, is a one-line
        TrackingError, not a guessed space."""
        import tempfile
        from types import SimpleNamespace

        saved = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        try:
            if SEARCH_SPACE not in {a.path for a in self.client.list_artifacts(study_run)}:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(study_run, SEARCH_SPACE, tmp)
                with open(path) as f:
                    raw = json.load(f)
        except (*TRACKING_ERRORS, json.JSONDecodeError) as e:
            raise TrackingError(f"MLflow tracking at {self.uri}: {SEARCH_SPACE} of run {study_run} could not be "
                                f"read: {first_line(e)}") from None
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved
        return {cid: {n: SimpleNamespace(**p) for n, p in space.items()} for cid, space in raw.items()}

    def latest_study_run(self, finished: bool = False) -> str | None:
        """The study run started last; with ``finished``, the last one that completed."""
        done = " and attributes.status = 'FINISHED'" if finished else ""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.kind = 'study'{done}",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def children(self, study_run: str, kind: str, extra: str = "") -> list:
        """A study run's baseline, cell or trial runs (by their study_run tag; studies tracked before
        cells existed nested their trials directly under the study run)."""
        tail = f" and tags.kind = '{kind}'" + (f" and {extra}" if extra else "")
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.{STUDY_RUN} = '{study_run}'{tail}",
                                       max_results=50000)
        if runs:
            return runs
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT}` = '{study_run}'{tail}",
                                       max_results=50000)

    def unfinished_children(self) -> list[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{STUDY_RUN} = '{self.study_run}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        return [r.info.run_id for r in runs]


def mlflow_key(text: str) -> str:
    """A label as part of an MLflow metric name (letters, digits, _ - . / and spaces only)."""
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in str(text))


def end_tags(epochs_done: int, epochs: int) -> dict:
    """The tags a finished trial's run ends with."""
    return {"epochs_done": epochs_done, "stopped_early": epochs_done < epochs}


def trial_run(config: dict, cells: dict, trial_id: str) -> tuple[str, dict, dict]:
    """A trial run's name, parameters and tags, from its Tune config: the same whether the run is
    written live or rebuilt from the journal."""
    stage, cfg = trial_stage(config), stage_config(config)
    cell = cells[cfg["cell"]]
    scenario = cell.at_seed(cfg["seed"]) if "seed" in cfg else cell.scenario
    params = {**dict(zip(RUN_PARAMS, (cell.method, cell.falw, scenario.name, scenario.dataset, scenario.model,
                                      scenario.forget.label, scenario.forget.gamma, scenario.seed, cell.epochs))),
              **cell.hp(cfg)}
    tags = {"kind": "trial", "stage": stage, "cell": cell.id, "method": cell.method,
            "falw": "on" if cell.falw else "off", "scenario": scenario.name, "label": scenario_label(scenario),
            "trial_id": trial_id, GROUP: cell_run_name(cell, cells)}
    return f"{cell.label} s{scenario.seed} {stage} {trial_id}", params, tags


def closing(record: dict, cell) -> tuple[dict, dict]:
    """(tags, metrics) a completed trial's run gets when it ends: its end tags (``diverged`` too, or
    the error of a failed one), and for a final run its per-class forget accuracy at its last epoch."""
    result = record["result"]
    if record["status"] == ERROR:
        return {"error": record.get("error", "")[:250]}, {}
    tags = {**end_tags(int(result.get("epoch", 0)), cell.epochs), **({"diverged": "true"} if result.get("diverged") else {})}
    final = trial_stage(record["config"]) == "final" and result.get("fa_per_class") is not None
    return tags, per_class_metrics(result["fa_per_class"]) if final else {}
