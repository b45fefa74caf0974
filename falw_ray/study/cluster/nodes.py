"""Shared storage, checked rather than assumed: a node that does not see the study's storage would
train baselines into a private copy, and the next run would retrain them without a word."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, NodeDiedError, TaskUnschedulableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..spec import StudyError

MARKER = ".falw-ray-storage-check-"
ANSWER_TIMEOUT_S = 120.0
"""How long a node may take to start a worker and answer: longer than a cold start of Ray's
worker on a busy node, shorter than anyone waits for a study that never begins."""


@ray.remote(num_cpus=0, max_retries=0)
def _read_marker(path: str) -> tuple[str, str | None, str]:
    """What this node reads at ``path``: its address, the content (None if unreadable) and why not."""
    ip = ray.util.get_node_ip_address()
    try:
        return ip, Path(path).read_text(), ""
    except OSError as e:
        return ip, None, e.strerror or type(e).__name__


def check_shared_storage(root: Path, timeout_s: float = ANSWER_TIMEOUT_S) -> None:
    """Raise StudyError, in one line naming the node and the path, unless every alive node reads the
    random token this driver writes into a marker file under ``root``. The driver's own node is not
    asked (it shares the driver's files), so a one-node cluster costs one call to Ray's node table and
    writes nothing. The marker, and any folder made for it, is removed whatever the outcome: the
    check leaves no file behind. A node that dies during the check is skipped; one joining later (an
    autoscaled worker) is not checked."""
    client = ray.util.client.ray.is_connected()
    here = None if client else ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if not nodes:
        return
    root = Path(root)
    made = [p for p in (root, *root.parents) if not p.exists()]
    token = secrets.token_hex(16)
    marker = root / f"{MARKER}{token}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(marker, "w") as f:
            f.write(token)
            f.flush()
            os.fsync(f.fileno())
        asked = {n["NodeID"]: _read_marker.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        for node_id, ref in asked.items():
            where = next(n["NodeManagerAddress"] for n in nodes if n["NodeID"] == node_id)
            try:
                ip, seen, why = ray.get(ref, timeout=timeout_s)
            except (NodeDiedError, TaskUnschedulableError):
                continue
            except GetTimeoutError:
                for pending in asked.values():
                    ray.cancel(pending)
                raise StudyError(f"storage: node {where} ({node_id[:12]}) did not answer the shared-storage check "
                                 f"of {root} within {timeout_s:.0f}s") from None
            if seen != token:
                what = f"cannot read {marker.name} there ({why})" if seen is None else f"{marker.name} differs there"
                raise StudyError(f"storage: node {ip} ({node_id[:12]}) does not see {root} as the driver does: "
                                 f"{what}; every node needs the same shared storage path")
    finally:
        marker.unlink(missing_ok=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass
