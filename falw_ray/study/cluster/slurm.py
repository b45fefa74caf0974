"""Run a study as a Slurm job: a Ray cluster inside the allocation, the study on it, and a follow-up
job when the time limit comes.

The job script starts Ray as Ray's Slurm guide does: `ray start --head` on the allocation's first
node and `ray start --address` on each other one (each an `srun` step), on ports chosen free on
their own node, with a temporary folder of the job's own and a token made for the job (sent to the
steps in their environment, never written to disk). The study then runs with `--address`, and every
Ray node is stopped when it ends, whatever happened.

Across time limits: the job asks Slurm for SIGUSR1 `signal_lead` seconds before its limit
(`--signal=B:USR1@N`). The script then stops the study as Ctrl-C would (the journal keeps every
finished trial) and submits a follow-up job running `falw-ray resume`, with `--dependency=afterany`
on itself so the two never overlap. A follow-up job, not `scontrol requeue`: many sites forbid
requeueing (JobRequeue=0), each job keeps its own id and log, and a chain can be read back from
`<storage>/slurm/<study>.jobs`. `scancel` sends SIGTERM, not SIGUSR1: the study stops and nothing
follows.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Folders that each node has for itself: a study's storage there is lost to the other nodes and to
the follow-up job, which may start on another node."""
SIGNAL = "USR1"


@dataclass(frozen=True)
class SlurmOptions:
    """What the job asks Slurm for. ``time`` is Slurm's own format (``MINUTES``, ``HH:MM:SS``,
    ``D-HH:MM:SS``); ``signal_lead`` is how many seconds before the limit the study is stopped."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    mem: str | None = None
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = field(default_factory=tuple)
    setup: str | None = None
    signal_lead: int = 300

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"--nodes: expected 1 or more, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"--gpus-per-node: expected 0 or more, got {self.gpus_per_node}")
        if self.cpus_per_node is not None and self.cpus_per_node < 1:
            raise ValueError(f"--cpus-per-node: expected 1 or more, got {self.cpus_per_node}")
        if self.signal_lead < 10:
            raise ValueError(f"--signal-lead: expected 10 seconds or more, got {self.signal_lead}")


def paths(storage: str, study: str) -> dict[str, Path]:
    """Where a study's Slurm files live, beside its results on the shared storage."""
    d = Path(storage) / "slurm"
    return {"dir": d, "script": d / f"{study}.sbatch", "jobs": d / f"{study}.jobs", "log": d / f"{study}-%j.out"}


def check(study_path, opts: SlurmOptions, storage: str | None = None, tracking_uri: str | None = None):
    """Everything that can be refused before the queue, each in one line (ValueError or
    FileNotFoundError): no sbatch, a relative or node-local location, GPUs per trial but none per node.
    Returns the study's spec and its Locations."""
    from ..spec import load_study
    from .submit import _local_path, cluster_locations

    if shutil.which("sbatch") is None:
        raise FileNotFoundError("sbatch not found on PATH: run falw-ray slurm on a Slurm login node "
                                "(or load Slurm's module first)")
    spec = load_study(study_path)
    where = cluster_locations(study_path, storage, tracking_uri, runs_in="a Slurm job on the cluster's nodes",
                              example="/shared/falw")
    where = where._replace(storage=os.path.expanduser(where.storage))
    for what, path in (("--storage" if storage else f"{study_path}: storage", where.storage),
                       ("--tracking-uri" if tracking_uri else f"{study_path}: tracking.uri",
                        _local_path(where.tracking_uri))):
        if path is not None and any(Path(path).resolve().is_relative_to(p) for p in NODE_LOCAL):
            raise ValueError(f"{what} {path!r} is on a node-local folder ({', '.join(NODE_LOCAL)}): the job's "
                             "other nodes and its follow-up jobs would not see it; give a path on the cluster's "
                             "shared file system")
    gpu = spec.resources.gpu
    if gpu > 0 and opts.gpus_per_node == 0:
        raise ValueError(f"{study_path}: resources.gpu is {gpu:g} per trial but --gpus-per-node is 0: give "
                         "--gpus-per-node (or set resources.gpu: 0 to run on CPUs)")
    return spec, where


def trials_in_flight(opts: SlurmOptions, cpu_per_trial: float, gpu_per_trial: float) -> int | None:
    """How many trials the allocation runs at once (None when the CPUs per node are Slurm's default)."""
    if gpu_per_trial > 0:
        return int(opts.nodes * opts.gpus_per_node // gpu_per_trial)
    if opts.cpus_per_node is None:
        return None
    return int(opts.nodes * (opts.cpus_per_node // max(cpu_per_trial, 1e-9)))


def job_script(study_path, name: str, where, opts: SlurmOptions, python: str | None = None) -> str:
    """The batch script. Its first argument is `run` or `resume` (what `falw-ray` does with the study).
    With FALW_RAY_SLURM_PLAN set it only prints which node runs Ray's head and which join it, and
    where, then exits: the script's node logic, checkable without an allocation."""
    python = python or sys.executable
    p = paths(where.storage, name)
    sb = [f"--job-name=falw-ray-{name}", f"--nodes={opts.nodes}", "--ntasks-per-node=1",
          f"--output={p['log']}", "--open-mode=append", f"--signal=B:{SIGNAL}@{opts.signal_lead}"]
    if opts.cpus_per_node:
        sb.append(f"--cpus-per-task={opts.cpus_per_node}")
    if opts.gpus_per_node:
        sb.append(f"--gpus-per-node={opts.gpus_per_node}")
    for flag, value in (("mem", opts.mem), ("time", opts.time), ("partition", opts.partition),
                        ("account", opts.account), ("qos", opts.qos)):
        if value:
            sb.append(f"--{flag}={value}")
    sb += [a if a.startswith("-") else f"--{a}" for a in opts.sbatch_args]
    q = shlex.quote
    lines = ["#!/bin/bash", *(f"#SBATCH {a}" for a in sb),
             "# Written by `falw-ray slurm`: a Ray cluster in this allocation, the study on it, a follow-up",
             "# job (falw-ray resume) when the time limit nears. Argument: run | resume.",
             "set -u",
             *([opts.setup] if opts.setup else []),
             f"PY={q(python)}",
             f"STUDY={q(str(Path(study_path).resolve()))}",
             f"SCRIPT={q(str(p['script']))}",
             f"JOBS={q(str(p['jobs']))}",
             f"GPUS={opts.gpus_per_node}",
             f"NAME={q(name)}",
             f"STUDY_ARGS=(--storage {q(where.storage)} --tracking-uri {q(where.tracking_uri)})",
             BODY]
    return "\n".join(lines) + "\n"


BODY = r'''MODE="${1:-run}"
note() { [ -n "${FALW_RAY_SLURM_PLAN:-}" ] || echo "$SLURM_JOB_ID $(date +%s) $*" >> "$JOBS"; }
note started "$MODE"
WARNED=0
CANCELLED=0
STUDY_PID=
on_limit() {
  WARNED=1; note warned; echo "falw-ray slurm: time limit near: stopping the study"
  [ -z "$STUDY_PID" ] || kill -TERM "$STUDY_PID"
}
on_stop() { CANCELLED=1; note cancelled; [ -n "$STUDY_PID" ] || exit 143; kill -TERM "$STUDY_PID"; }
trap on_limit USR1
trap on_stop TERM INT
CPUS="${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}"
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD_IP=$(hostname --ip-address | awk '{print $1}')
PORT=$("$PY" -m falw_ray.study.cluster.slurm ports 1)
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
export RAY_AUTH_TOKEN
TMP="/tmp/falw-ray-$SLURM_JOB_ID"
if [ -n "${FALW_RAY_SLURM_PLAN:-}" ]; then
  echo "head ${NODES[0]} $HEAD_IP:$PORT"
  for node in "${NODES[@]:1}"; do echo "worker $node $HEAD_IP:$PORT"; done
  exit 0
fi
RAY_STEPS=()
stop_ray() {
  for pid in "${RAY_STEPS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${RAY_STEPS[@]}"; do wait "$pid" 2>/dev/null; done
  srun --overlap --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 rm -rf "$TMP" 2>/dev/null
}
trap stop_ray EXIT
echo "falw-ray slurm: job $SLURM_JOB_ID ($MODE) on ${NODES[*]}; Ray head $HEAD_IP:$PORT"
srun --overlap --nodes=1 --ntasks=1 -w "${NODES[0]}" "$PY" -m falw_ray.study.cluster.slurm node --head \
  --node-ip-address="$HEAD_IP" --port="$PORT" \
  --num-cpus="$CPUS" --num-gpus="$GPUS" --temp-dir="$TMP" &
RAY_STEPS+=($!)
"$PY" -m falw_ray.study.cluster.slurm wait "$HEAD_IP:$PORT" 1 180 || { note ended 1; exit 1; }
for node in "${NODES[@]:1}"; do
  srun --overlap --nodes=1 --ntasks=1 -w "$node" "$PY" -m falw_ray.study.cluster.slurm node \
    --address="$HEAD_IP:$PORT" --num-cpus="$CPUS" --num-gpus="$GPUS" --temp-dir="$TMP" &
  RAY_STEPS+=($!)
done
"$PY" -m falw_ray.study.cluster.slurm wait "$HEAD_IP:$PORT" "${#NODES[@]}" 300 || { note ended 1; exit 1; }
if [ "$WARNED" = 1 ]; then
  echo "falw-ray slurm: the time limit came before the study started: give a longer --time" >&2
  note ended 1; exit 1
fi
BEFORE=$("$PY" -m falw_ray.study.cluster.slurm progress "${STUDY_ARGS[1]}" "$NAME")
note study
"$PY" -m falw_ray.cli "$MODE" "$STUDY" --address "$HEAD_IP:$PORT" "${STUDY_ARGS[@]}" &
STUDY_PID=$!
while :; do wait "$STUDY_PID"; RC=$?; kill -0 "$STUDY_PID" 2>/dev/null || break; done
if [ "$WARNED" = 1 ] && [ "$CANCELLED" = 0 ] && [ "$RC" != 0 ] \
   && [ "$("$PY" -m falw_ray.study.cluster.slurm progress "${STUDY_ARGS[1]}" "$NAME")" = "$BEFORE" ]; then
  echo "falw-ray slurm: this job recorded no trial and stored no baseline before its time limit: no" \
    "follow-up job (it would do the same); give a longer --time" >&2
  RC=1
elif [ "$WARNED" = 1 ] && [ "$CANCELLED" = 0 ] && [ "$RC" != 0 ]; then
  NEXT=$(sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID" "$SCRIPT" resume)
  note followup "$NEXT"
  echo "falw-ray slurm: the study continues in job $NEXT (falw-ray resume)"
  RC=0
fi
note ended "$RC"
exit "$RC"'''


def submit(study_path, opts: SlurmOptions, storage: str | None = None, tracking_uri: str | None = None,
           dry_run: bool = False) -> tuple[str, str | None, object, object]:
    """Write the job script beside the study's results and sbatch it; returns (script, job id or None
    for a dry run, spec, locations)."""
    spec, where = check(study_path, opts, storage, tracking_uri)
    script = job_script(study_path, spec.name, where, opts)
    if dry_run:
        return script, None, spec, where
    p = paths(where.storage, spec.name)
    p["dir"].mkdir(parents=True, exist_ok=True)
    tmp = p["script"].with_suffix(".sbatch.tmp")
    tmp.write_text(script)
    tmp.chmod(0o755)
    os.replace(tmp, p["script"])
    out = subprocess.run(["sbatch", "--parsable", str(p["script"]), "run"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch refused the job: {(out.stderr or out.stdout).strip().splitlines()[-1]}")
    job_id = out.stdout.strip().split(";")[0]
    with open(p["jobs"], "a") as f:
        f.write(f"{job_id} {int(time.time())} submitted run\n")
    return script, job_id, spec, where


def job_chain(jobs_file: Path) -> list[dict]:
    """The jobs a study ran as, in order, from its jobs file: id, what it did and how it ended."""
    chain: dict[str, dict] = {}
    if not jobs_file.exists():
        return []
    for line in jobs_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        job, _, event, *rest = parts
        entry = chain.setdefault(job, {"job": job, "mode": "run", "events": []})
        entry["events"].append(event)
        if event in ("started", "submitted") and rest:
            entry["mode"] = rest[0]
        if event == "followup" and rest:
            chain.setdefault(rest[0], {"job": rest[0], "mode": "resume", "events": ["submitted"]})
        if event == "ended" and rest:
            entry["rc"] = int(rest[0])
    return list(chain.values())


def slurm_state(job: str) -> str:
    """The job's state as Slurm tells it now (scontrol keeps ended jobs for a few minutes)."""
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    for token in out.stdout.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return "gone from the queue"


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on this node now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_node(args: list[str]) -> None:
    """`ray start --block` with this node's own free ports for what Ray would otherwise fix (two jobs
    sharing a node must not collide on 8265, 10001 or 52365)."""
    ray = str(Path(sys.executable).with_name("ray"))
    given = {a.split("=", 1)[0] for a in args}
    extra = []
    ports = iter(free_ports(4))
    for flag in ("--dashboard-agent-listen-port", "--ray-client-server-port", "--dashboard-port",
                 "--metrics-export-port"):
        if flag not in given and (flag != "--dashboard-port" or "--head" in given):
            extra.append(f"{flag}={next(ports)}")
    os.execv(ray, [ray, "start", "--block", "--disable-usage-stats", *args, *extra])


def wait_for_nodes(address: str, count: int, timeout_s: float) -> bool:
    """Block until ``count`` Ray nodes are alive at ``address``; False (and one line) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    script = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False);"
              "print(sum(n['Alive'] for n in ray.nodes()))")
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] and \
                int(out.stdout.strip().splitlines()[-1]) >= count:
            return True
        time.sleep(3)
    print(f"falw-ray slurm: {count} Ray node(s) at {address} not up after {timeout_s:g}s", file=sys.stderr)
    return False


def progress(storage: str, name: str) -> str:
    """What a job leaves behind that the next one builds on: trials in the study's journal and files in
    the baseline store. Unchanged across a job means the job's time was too short to get anywhere."""
    from ..record.journal import journal_path

    journal = journal_path(storage, name)
    lines = journal.read_bytes().count(b"\n") if journal.exists() else 0
    store = Path(storage) / "baselines"
    files = sum(1 for p in store.rglob("*") if p.is_file()) if store.exists() else 0
    return f"{lines} {files}"


def main(argv: list[str]) -> int:
    """The job script's helpers: `ports N`, `node RAY_START_ARGS...`, `wait ADDRESS COUNT TIMEOUT`,
    `progress STORAGE STUDY`."""
    cmd, *rest = argv
    if cmd == "progress":
        print(progress(rest[0], rest[1]))
        return 0
    if cmd == "ports":
        print(" ".join(map(str, free_ports(int(rest[0])))))
        return 0
    if cmd == "node":
        start_node(rest)
        return 1
    if cmd == "wait":
        return 0 if wait_for_nodes(rest[0], int(rest[1]), float(rest[2])) else 1
    print(f"falw_ray.study.cluster.slurm: unknown command {cmd!r}; expected ports, node, wait or progress", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
