"""A study's Ray: started (or joined at an address) with the study's plugin modules shipped to every
node, checked to hold a trial and to share the study's storage, and how many trials it runs at once."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..spec import StudyError, StudySpec
from . import raylog, ship
from .connect import connect_ray
from .nodes import check_shared_storage

QUIET_ENV = {
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    # Trials are recorded in the study's journal and tracked in MLflow: none of Tune's per-trial
    # files (JSON, CSV, TensorBoard), which cost the controller loop a file sync per result.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}


def quiet_libraries() -> None:
    """Keep the libraries' INFO and WARNING lines (MLflow's database set-up, Ray's start and its
    token-authentication notice, Tune's state saves) off the console; errors still show. The
    protections those lines describe stay on."""
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow's client prints a "View run ... at" line per run it closes on a server: hundreds per study.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def start_ray(spec: StudySpec, source: str, cells, address: str | None, root: Path, verbose: bool, say) -> int:
    """Connect (starting a local Ray without ``address``), check the cluster, and return how many
    trials run at once (``search.max_concurrent``, else what the cluster holds)."""
    import ray

    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    env = ship.runtime_env(cells, {"env_vars": dict(QUIET_ENV)} if address else None)
    if ray.is_initialized() and (missing := ship.unshipped(env))[0]:
        if missing[1]:  # an earlier study's connection, without this one's plugins: remake it
            ray.shutdown()
        else:
            say(f"Ray was started before this study, without its plugin modules {missing[0]}: a worker that "
                "cannot import them fails its trials; start Ray with runtime_env={'py_modules': [...]}")
    if not ray.is_initialized():
        local = {} if address else {"_node_ip_address": "127.0.0.1"}
        connect_ray(address, include_dashboard=False, log_to_driver=verbose,
                    logging_level=logging.INFO if verbose else logging.ERROR, runtime_env=env, **local)
        ship.connected(env)
    raylog.connected()
    check_resources(spec, source, address, ray.cluster_resources())
    check_shared_storage(root)
    return spec.search.max_concurrent or slots(spec, address, ray.cluster_resources())


def check_resources(spec: StudySpec, source: str, address: str | None, cluster: dict) -> None:
    """A local cluster cannot grow: a trial that asks for more than it has would wait forever."""
    if address is not None:
        return
    for name, need, have in (("gpu", spec.resources.gpu, cluster.get("GPU", 0)), ("cpu", spec.resources.cpu, cluster.get("CPU", 0))):
        if need > have:
            raise StudyError(f"{source}: resources.{name}: a trial asks for {need:g} but this Ray cluster has {have:g}")


def slots(spec: StudySpec, address: str | None, cluster: dict) -> int:
    """How many trials run at once. Tune starts one trial at a time for a custom searcher unless told
    this: on a local cluster it is what the resources hold; on a remote (autoscaling) cluster, a
    generous 16 keeps enough trials pending for the autoscaler to see the demand."""
    if address is not None:
        return 16
    n = int(cluster.get("CPU", 1) // spec.resources.cpu)
    if spec.resources.gpu > 0:
        n = min(n, int(cluster.get("GPU", 0) // spec.resources.gpu))
    return max(1, n)
