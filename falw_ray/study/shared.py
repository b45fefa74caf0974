"""Baselines and data sets as shared Ray objects: built once (as Ray tasks, in parallel), stored
content-addressed on disk, and handed to trials as object references, never as copies."""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import ray
import torch

from ..baselines import ROLES, Baselines, assemble, train_role
from ..data.registry import load_dataset
from ..scenario import Scenario
from ..store import BaselineStore


def dataset_key(s: Scenario) -> str:
    return f"{s.dataset}:{s.data_dir or ''}"


@ray.remote(num_returns=2)
def build_baselines(scenario: Scenario, store_root: str, threads: int) -> tuple[Baselines, dict]:
    """Get each baseline from the store or train it, then evaluate both on the scenario."""
    torch.set_num_threads(max(1, threads))
    store = BaselineStore(store_root)
    trained, events = {}, {}
    for role in ROLES:
        key = scenario.original_key() if role == "original" else scenario.key()
        info = {"scenario": scenario.model_dump(mode="json", exclude={"forget"} if role == "original" else None)}
        trained[role], events[role] = store.get_or_train(
            role, key, lambda r=role: train_role(r, scenario), info,
            log=lambda msg: print(f"falw-ray: {msg}", file=sys.stderr, flush=True),
        )
    b = assemble(scenario, trained["original"], trained["retrained"])
    if events["retrained"] != "hit":
        splits = io.BytesIO()
        np.savez(splits, **b.splits.as_dict())
        metrics = {"original": b.original_metrics, "retrained": b.retrained_metrics}
        store.attach("retrained", scenario.key(), {"splits.npz": splits.getvalue(),
                                                    "metrics.json": json.dumps(metrics, indent=1).encode()})
    events["metrics"] = {"original": b.original_metrics, "retrained": b.retrained_metrics,
                         "original_seconds": b.original_seconds, "retrain_seconds": b.retrain_seconds}
    return b, events


@dataclass
class SharedObjects:
    """Object references every trial reads: baselines by scenario key, data sets by dataset key."""

    baselines: dict[str, ray.ObjectRef] = field(default_factory=dict)
    datasets: dict[str, ray.ObjectRef] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)

    def ensure(self, scenarios: list[Scenario], store_root: str, cpu: float, gpu: float, say=print) -> list[Scenario]:
        """Build the baselines not yet here, all in parallel; returns the scenarios built now."""
        new = {s.key(): s for s in scenarios if s.key() not in self.baselines}
        pending = {}
        opts = {"num_cpus": cpu, "num_gpus": 1 if gpu > 0 else 0}
        for s in new.values():
            # Loaded here first: a download then happens once, before any task reads the folder.
            if (dk := dataset_key(s)) not in self.datasets:
                self.datasets[dk] = ray.put(load_dataset(s.dataset, s.data_dir, s.download))
        for key, s in new.items():
            b_ref, e_ref = build_baselines.options(**opts).remote(s, store_root, int(cpu))
            self.baselines[key] = b_ref
            pending[e_ref] = (key, s)
        start, done = time.time(), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, s = pending.pop(ready[0])
            events = ray.get(ready[0])
            done += 1
            self.events.append({"scenario": s, "key": key, **events})
            say(f"baselines {done}/{len(new)} ready: {s.name} (original: {events['original']}, "
                f"retrained: {events['retrained']}, {time.time() - start:.0f}s)")
        return list(new.values())
