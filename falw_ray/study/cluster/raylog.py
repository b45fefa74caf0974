"""A lost worker node in one line on the driver's console, instead of Ray's own report of it.

When a node's raylet dies, Ray pushes the driver a ``(raylet)`` message with the last 20 lines of
that raylet's log (its state dump), then, once the GCS has missed the node's heartbeats, a second
one naming the node; Tune logs each trial that ran there as failed, with a traceback. Without
``--verbose`` the study says instead, once per node: which node was lost and what becomes of its
trials; once per trial: that it lost its worker and runs again. ``--verbose`` shows Ray's own.
"""
from __future__ import annotations

import logging
import re

NODE_DEAD = re.compile(r"The node with node id: (?P<id>[0-9a-f]+) and address: (?P<ip>\S+)")
RAYLET_DIED = "Raylet is terminated. Termination is unexpected."
ACTOR_NODE = re.compile(r"\tip: (?P<ip>\S+)")
TUNE_LOGGER = "ray.tune.execution.tune_controller"
"""Where Tune logs "Trial task failed for trial ..." with the trial's exception."""


class NodeLossLines(logging.Filter):
    """Ray's messages about a lost node (pushed to the driver) and Tune's failed-trial records whose
    worker died with it, each turned into one line for ``say``."""

    def __init__(self, say, max_failures: int):
        super().__init__()
        self.say, self.max_failures = say, max_failures
        self.on = True
        self.nodes_said: set[str] = set()
        self.raylet_died = False
        self.dead_before: set[str] | None = None  # nodes already dead when the study started: not news

    def raylet(self, messages: list[str]) -> None:
        """Ray's ``(raylet)`` messages: a node marked dead is one line, said once; the raylet's own
        death (its log tail, sent ahead of it) only adds the cause to that line."""
        for message in messages:
            if message.startswith(RAYLET_DIED):
                self.raylet_died = True
            elif (m := NODE_DEAD.search(message)) and m["id"] not in self.nodes_said:
                self.nodes_said.add(m["id"])
                cause = "raylet died" if self.raylet_died else "no heartbeat"
                self.raylet_died = False
                self.say(f"lost node {m['ip']} ({m['id'][:12]}, {cause}): its trials run again elsewhere")
            elif not message.startswith(RAYLET_DIED):
                self.say(" ".join(message.split()))

    def filter(self, record: logging.LogRecord) -> bool:
        """Tune's record of a trial whose worker died: one line, no traceback; any other passes."""
        error = record.exc_info[1] if record.exc_info else None
        if not self.on or error is None or not _worker_died(error):
            return True
        self.said_dead_nodes()  # the GCS usually knows by now: the node's line comes before its trials'
        ip = ACTOR_NODE.search(str(error))
        where = f" on node {ip['ip']}" if ip else ""
        self.say(f"{record.getMessage().replace('Trial task failed for trial', 'trial')} lost its worker{where} "
                 f"({type(error).__name__}): it starts again")
        return False

    def said_dead_nodes(self) -> None:
        """One line per node the GCS lists as dead since the study started (Ray's public node table),
        where Ray's own message naming it has not come yet."""
        import ray

        try:
            nodes = ray.nodes() if ray.is_initialized() else []
        except Exception:  # noqa: BLE001 - a report on the console must never end the study
            return
        dead = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes if not n.get("Alive", True)}
        for node_id, ip in dead.items():
            if node_id not in (self.dead_before or set()) and node_id not in self.nodes_said:
                self.nodes_said.add(node_id)
                self.say(f"lost node {ip} ({node_id[:12]}, {'raylet died' if self.raylet_died else 'gone'}): "
                         "its trials run again elsewhere")


def _worker_died(error: BaseException) -> bool:
    from ray.exceptions import NodeDiedError, RayActorError, WorkerCrashedError

    return isinstance(error, (RayActorError, NodeDiedError, WorkerCrashedError))


_installed: NodeLossLines | None = None


def quiet_node_loss(say, max_failures: int, on: bool = True) -> NodeLossLines:
    """Route Ray's node-loss messages and Tune's worker-died records in this driver through
    :class:`NodeLossLines` (installed once per process; a later study's ``say`` replaces the earlier
    one's, and ``on=False``, a verbose study, lets Ray's own through again).

    SHIM: Ray pushes its ``(raylet)`` messages through ``ray._private.worker.print_to_stdstream``
    (its error listener thread calls it by name) with no public hook; this wraps that function for
    messages from ``raylet`` alone and leaves every other call as it was. Where a Ray release
    moves it, nothing is wrapped and Ray's own messages show, as with ``--verbose``."""
    global _installed
    if _installed is None:
        _installed = NodeLossLines(say, max_failures)
        logging.getLogger(TUNE_LOGGER).addFilter(_installed)
        try:
            from ray._private import worker
        except ImportError:
            return _installed
        original = getattr(worker, "print_to_stdstream", None)
        if original is not None:
            def print_to_stdstream(data, *args, **kwargs):
                if isinstance(data, dict) and data.get("pid") == "raylet" and _installed.on:
                    return _installed.raylet([str(line) for line in data.get("lines", [])])
                return original(data, *args, **kwargs)

            worker.print_to_stdstream = print_to_stdstream
    _installed.say, _installed.max_failures, _installed.on = say, max_failures, on
    _installed.dead_before = None
    return _installed


def connected() -> None:
    """The study is connected to its Ray: nodes already dead now (an earlier loss on a long-lived
    cluster) are not this study's news."""
    import ray

    if _installed is not None:
        _installed.dead_before = {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
