"""Baselines and data sets as shared Ray objects: built once (as Ray tasks, in parallel), stored
content-addressed on disk, and handed to trials as object references, never as copies.

Every object a trial reads is the driver's own (``ray.put``), so it lives on the driver's node and
goes only with the driver. A task's return value lives on the node that ran the task: when that
node is lost, Ray rebuilds the object by re-running the task, which needs a CPU that the trial
waiting for it may hold, and the study hangs. So a built baseline is fetched once and put again."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import ray
import torch
from ray.exceptions import RayTaskError

from ...baselines import Baselines, store_baselines, stored_baselines
from ...data.arrays import DatasetArrays
from ...data.registry import load_dataset
from ...plugins import PluginError
from ...scenario import Scenario
from ...store import BaselineStore
from .ship import this_node
from ..spec import StudyError


def dataset_key(s: Scenario) -> str:
    """One shared copy per data set, where its files are, what they hold and how it is generated."""
    return f"{s.dataset}:{s.data_dir or ''}:{s.data_file or ''}:{s.data_digest or ''}:{s.data_options.hashable()}"


@ray.remote(num_returns=2)
def build_baselines(scenario: Scenario, store_root: str, threads: int, data: DatasetArrays) -> tuple[Baselines, dict]:
    """Get each baseline from the store or train it, then evaluate both on the scenario; the event
    names the node it ran on. ``data`` is the driver's copy: a node needs no data files of its own.
    A plugin (a model of one's own) this node cannot import is one line naming it and the node."""
    torch.set_num_threads(max(1, threads))
    try:
        b, event = store_baselines(scenario, BaselineStore(store_root),
                                   log=lambda msg: print(f"falw-ray: {msg}", file=sys.stderr, flush=True), data=data)
    except PluginError as e:
        raise StudyError(f"baselines of {scenario.name} on node {this_node()}: {e}") from None
    return b, {**event, "node": ray.util.get_node_ip_address()}


def check_stored(scenario: Scenario, store_root: str, node: str) -> None:
    """A baseline a task built must be in the store the driver sees: a node that joined after the
    start's storage check (an autoscaled worker) and does not share the storage would otherwise
    train into a private copy, and every later study would train it again."""
    store = BaselineStore(store_root)
    for role, key in (("original", scenario.original_key()), ("retrained", scenario.key())):
        if not store.path(role, key).exists():
            raise StudyError(f"storage: node {node} built the {role} baseline of {scenario.name} into its own "
                             f"{store.path(role, key)}, which this driver does not see: every node must mount the "
                             f"study's storage at the same path")


@dataclass
class SharedObjects:
    """Object references every trial reads: baselines by scenario key, data sets by dataset key."""

    baselines: dict[str, ray.ObjectRef] = field(default_factory=dict)
    datasets: dict[str, ray.ObjectRef] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    pending: dict[str, tuple[ray.ObjectRef, Scenario]] = field(default_factory=dict)
    ready: dict[str, dict] = field(default_factory=dict)
    arrays: dict[str, DatasetArrays] = field(default_factory=dict, repr=False)
    store_root: str = ""

    def start(self, scenarios: list[Scenario], store_root: str, cpu: float, gpu: float) -> None:
        """Put the stored baselines of these scenarios in the object store, and start Ray tasks to
        build the others, all in parallel; returns without waiting for the tasks."""
        store = BaselineStore(store_root)
        self.store_root = store_root
        opts = {"num_cpus": cpu, "num_gpus": 1 if gpu > 0 else 0}
        for s in scenarios:
            key = s.key()
            if key in self.baselines:
                continue
            # Loaded here first: a download then happens once, before any task reads the folder.
            if (dk := dataset_key(s)) not in self.datasets:
                self.arrays[dk] = load_dataset(*s.data_args())
                self.datasets[dk] = ray.put(self.arrays[dk])
            if (found := stored_baselines(s, store, self.arrays[dk])) is not None:
                self.baselines[key] = ray.put(found[0])
                self.ready[key] = {"scenario": s, "key": key, **found[1]}
                continue
            b_ref, e_ref = build_baselines.options(**opts).remote(s, store_root, int(cpu), self.datasets[dk])
            self.baselines[key] = b_ref
            self.pending[key] = (e_ref, s)

    def wait(self, scenarios: list[Scenario], say=print) -> list[dict]:
        """Block until these scenarios' baselines are ready, each then held by the driver (see the
        module's docstring); returns the events (scenario, key, hit/trained per role, metrics) of
        those not reported before."""
        keys = list(dict.fromkeys(s.key() for s in scenarios))
        todo = [k for k in keys if k in self.pending or k in self.ready]
        started, reported = time.time(), []

        def report(event: dict) -> None:
            self.events.append(event)
            reported.append(event)
            say(f"baselines {len(reported)}/{len(todo)} ready: {event['scenario'].name} (original: "
                f"{event['original']}, retrained: {event['retrained']}, {time.time() - started:.0f}s)")

        for key in [k for k in todo if k in self.ready]:
            report(self.ready.pop(key))
        waiting = {self.pending[k][0]: k for k in todo if k in self.pending}
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=1)
            key = waiting.pop(ready[0])
            _, s = self.pending.pop(key)
            try:
                event = ray.get(ready[0])
            except RayTaskError as e:
                if isinstance(e.cause, StudyError):  # its one line, not the task's traceback
                    raise StudyError(str(e.cause)) from None
                raise
            check_stored(s, self.store_root, event.pop("node"))
            self.baselines[key] = ray.put(ray.get(self.baselines[key]))
            report({"scenario": s, "key": key, **event})
        return reported
