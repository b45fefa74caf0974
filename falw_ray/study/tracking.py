"""MLflow tracking: one experiment per study, a study run, baseline runs and a nested run per trial.

All writes go through an ``MlflowClient`` on the driver (no global active-run state), so runs of
trials that a scheduler stops early are closed like any other and none is left RUNNING.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from .cells import scenario_label

PARENT = "mlflow.parentRunId"
EPOCH_METRICS = (
    "fa", "ra", "ta", "mia", "fa_gap", "ra_gap", "ta_gap", "mia_gap", "avg_gap",
    "fa_gap_head", "fa_gap_mid", "fa_gap_tail", "fa_dev_head", "fa_dev_mid", "fa_dev_tail", "elapsed", "rte",
)


def default_tracking_uri() -> str:
    """A SQLite file in the working directory: no server needed."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


class TrackingError(RuntimeError):
    pass


class Tracker:
    def __init__(self, uri: str | None, experiment: str, artifact_root: Path | None = None):
        self.uri = uri or default_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        self.experiment_id: str | None = None
        self.study_run: str | None = None

    def __getstate__(self) -> dict:
        """Tune pickles its run config (and so this tracker) with the experiment: keep only the address."""
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.uri)

    def resume_study(self) -> str | None:
        """Reopen the latest study run if it did not finish, so a resumed study writes into it."""
        run_id = self.latest_study_run()
        if run_id is None or self.client.get_run(run_id).info.status == "FINISHED":
            return None
        self.client.update_run(run_id, status="RUNNING")
        self.study_run = run_id
        return run_id

    def trial_runs(self, stage: str) -> dict[str, str]:
        """trial id -> MLflow run of a study run's trials: a resumed trial keeps its run."""
        runs = self.children(self.study_run, "trial", f"tags.stage = '{stage}'")
        return {r.data.tags["trial_id"]: r.info.run_id for r in runs if "trial_id" in r.data.tags}

    def connect(self) -> None:
        """Reach the store and create the experiment, before any compute starts."""
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = None
                if self.artifact_root is not None and not self.uri.startswith(("http://", "https://", "databricks")):
                    location = (self.artifact_root / self.experiment_name).resolve().as_uri()
                self.experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrackingError(f"MLflow tracking at {self.uri} is unreachable: {first[:300]}") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start_run(self, name: str, params: dict | None = None, tags: dict | None = None, parent: str | None = None) -> str:
        all_tags = dict(tags or {})
        if parent:
            all_tags[PARENT] = parent
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

    def start_study(self, name: str, params: dict) -> str:
        self.study_run = self.start_run(name, params=params, tags={"kind": "study"})
        return self.study_run

    def log_baseline(self, scenario, label: str, role: str, metrics: dict, seconds: float, cache: str) -> str:
        run = self.start_run(
            f"baseline/{scenario.name}/{role}", parent=self.study_run,
            params={"dataset": scenario.dataset, "model": scenario.model, "forget": scenario.forget.label,
                    "seed": scenario.seed, "role": role, "label": label},
            tags={"kind": "baseline", "role": role, "scenario": scenario.name, "cache": cache},
        )
        self.log_metrics(run, {**{k: metrics[k] for k in ("fa", "ra", "ta", "mia")}, "train_seconds": seconds})
        self.end(run)
        return run

    def latest_study_run(self) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string="tags.kind = 'study'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def children(self, study_run: str, kind: str, extra: str = "") -> list:
        query = f"tags.`{PARENT}` = '{study_run}' and tags.kind = '{kind}'" + (f" and {extra}" if extra else "")
        return self.client.search_runs([self.experiment_id], filter_string=query, max_results=50000)

    def unfinished_children(self) -> list[str]:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT}` = '{self.study_run}' and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        return [r.info.run_id for r in runs]


class TrialLogger(Callback):
    """A Tune callback on the driver: a nested MLflow run per trial, per-epoch metrics, a final status."""

    def __init__(self, tracker: Tracker, cells: dict, stage: str):
        self.tracker, self.cells, self.stage = tracker, cells, stage
        self.runs: dict[str, str] = {}
        self.epochs: dict[str, int] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.runs:
            return
        config = trial.config.get("final", trial.config)
        cell = self.cells[config["cell"]]
        scenario = cell.at_seed(config["seed"]) if "seed" in config else cell.scenario
        hp = cell.hp(config)
        self.runs[trial.trial_id] = self.tracker.start_run(
            f"{self.stage}/{cell.id}/{trial.trial_id}", parent=self.tracker.study_run,
            params={"method": cell.method, "falw": cell.falw, "scenario": scenario.name, "dataset": scenario.dataset,
                    "model": scenario.model, "forget": scenario.forget.label, "gamma": scenario.forget.gamma,
                    "seed": scenario.seed, "epochs": cell.epochs, **hp},
            tags={"kind": "trial", "stage": self.stage, "cell": cell.id, "method": cell.method,
                  "falw": "on" if cell.falw else "off", "scenario": scenario.name, "label": scenario_label(scenario),
                  "trial_id": trial.trial_id},
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        self.epochs[trial.trial_id] = int(result.get("epoch", 0))
        self.tracker.log_metrics(run, {k: result[k] for k in EPOCH_METRICS if k in result}, step=int(result.get("epoch", 0)))
        if result.get("diverged"):
            self.tracker.tag(run, {"diverged": "true"})

    def on_trial_complete(self, iteration, trials, trial, **info):
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        config = trial.config.get("final", trial.config)
        done = self.epochs.get(trial.trial_id, 0)
        self.tracker.tag(run, {"epochs_done": done, "stopped_early": done < self.cells[config["cell"]].epochs})
        self.tracker.end(run, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        if (run := self.runs.get(trial.trial_id)) is not None:
            self.tracker.end(run, "FAILED")
