"""Submit a study to a running Ray cluster as a Ray job.

A job (not `ray.init(address=...)` from the laptop) keeps the Tune driver on the cluster: it
survives the client going away, and its logs stay with the cluster. The job runs
`falw-ray run STUDY --address auto`: its driver joins the running cluster (whose autoscaler may
still add the GPU nodes a trial asks for) instead of being taken for a local Ray that cannot grow.

The job runs in a temporary copy of the working dir on the head, so a relative storage or
tracking location (the default ones included) would put the study's results there, out of sight
and removed with the job's files: those are refused before anything is uploaded, and the
locations the job will write to are told (``cluster_locations``).

Token auth (Ray 2.60): the JobSubmissionClient attaches a token only when *this* process has
RAY_AUTH_MODE=token, although `ray start` turned token mode on because a token existed. So,
unless RAY_AUTH_MODE=disabled, the token Ray's own loader finds is sent as an Authorization
header (connect.auth_headers); a cluster without auth ignores it.
"""
from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from ...console import shell, width, wrap
from .connect import TOKEN_HELP, auth_headers

# Gitignore-style patterns: the working dir is zipped and uploaded, and a .venv is GBs. Ray 2.60 skips
# .git/.venv/venv/__pycache__ itself, unless RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES says otherwise.
EXCLUDES = [".venv", "venv", ".git", "__pycache__", "*.pyc", "*.db", "*.sqlite", "mlruns", "mlartifacts",
            "falw_results", "ray_results", ".pytest_cache", "*.egg-info"]
# Only what the study's own driver does not set: `falw-ray run --address auto` passes launch.QUIET_ENV
# in its ray.init(runtime_env=...), and Ray refuses (ValueError) to merge a driver's env var with the
# job's own value for the same key.
ENV_VARS = {"PYTHONUNBUFFERED": "1"}
SHARED_EXAMPLE = "/mnt/falw/results"
"""Where cluster.yaml's shared file system keeps results: the example an error message gives."""
TRACKING_EXAMPLE = "http://127.0.0.1:5000"
"""The MLflow server cluster.yaml starts on the head (reachable from the job's driver there)."""


class Locations(NamedTuple):
    """Where a submitted study writes, as the job on the cluster will see it."""

    storage: str
    results: str
    tracking_uri: str
    experiment: str

    def lines(self, columns: int | None = None) -> list[str]:
        """What a person reads after submitting, fitted to ``columns`` (the terminal's width)."""
        said = [f"results: {self.results} on the cluster (storage {self.storage}, baselines "
                f"{self.storage.rstrip('/')}/baselines)",
                f"MLflow:  {self.tracking_uri} (experiment {self.experiment})"]
        return [line for text in said for line in wrap(text, columns or width(), indent=" " * 9)]


def _local_path(uri: str) -> str | None:
    """The file path an MLflow tracking URI writes to on the machine that uses it; None for a server
    (http(s), databricks, a database server)."""
    if uri.startswith("databricks"):
        return None
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return uri  # a plain path: MLflow's file store
    scheme, rest = uri.split(":", 1)
    scheme = scheme.lower()
    if scheme == "sqlite":
        return rest[3:] if rest.startswith("///") else rest
    if scheme == "file":
        return urlparse(uri).path if rest.startswith("//") else rest
    return None


RAY_JOB = "a temporary copy of the working dir on the head"
"""Where a Ray job runs (the default ``runs_in`` of :func:`cluster_locations`)."""


def cluster_locations(study_path, storage: str | None = None, tracking_uri: str | None = None,
                      runs_in: str = RAY_JOB, example: str = SHARED_EXAMPLE) -> Locations:
    """Where the study at ``study_path`` will write when run as a job, ``storage`` and ``tracking_uri``
    (absolute paths, or a server URI) overriding the study's. A relative location, the defaults
    included, would land wherever the job runs (``runs_in``: for a Ray job, its temporary copy of the
    working dir on the head): refused with one line (ValueError) naming the field and what to give."""
    from ..spec import load_study

    spec = load_study(study_path)
    field = "--storage" if storage else f"{study_path}: storage"
    where = storage or spec.storage
    shared = ("the folder every node of cluster.yaml shares" if runs_in == RAY_JOB
              else "a folder every node sees")
    server = (f"{TRACKING_EXAMPLE} (the MLflow server cluster.yaml starts on the head)" if runs_in == RAY_JOB
              else "http://HOST:5000 (an MLflow server the nodes reach)")
    if not (os.path.isabs(where) or where.startswith("~")):
        raise ValueError(
            f"{field} {where!r} is a relative path: the study runs in {runs_in}, so its results would land "
            f"there, out of sight; give an absolute path on the cluster (e.g. --storage {example}, {shared})")
    uri = tracking_uri or spec.tracking.uri
    field = "--tracking-uri" if tracking_uri else f"{study_path}: tracking.uri"
    if uri is None:
        raise ValueError(
            f"{field} is not set, so MLflow would write sqlite:///mlflow.db into {runs_in}; give --tracking-uri "
            f"{server}, an absolute sqlite:////ABSOLUTE/PATH/mlflow.db, or set tracking.uri in the study")
    path = _local_path(uri)
    if path is not None and not os.path.isabs(path):
        raise ValueError(
            f"{field} {uri!r} is a relative path, so MLflow would write into {runs_in}; give --tracking-uri "
            f"{server} or an absolute path (sqlite:////ABSOLUTE/PATH/mlflow.db)")
    results = f"{where.rstrip('/')}/{spec.name}"
    return Locations(storage=where, results=results, tracking_uri=uri,
                     experiment=spec.tracking.experiment or spec.name)


_auth_headers = auth_headers  # the Authorization header for an explicit token, else for the one Ray finds


def job_client(address: str, token: str | None = None):
    """A JobSubmissionClient for `address` (e.g. http://head:8265) that authenticates like `ray start`."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=_auth_headers(token))
    except ConnectionError:
        raise ConnectionError(f"cannot reach the Ray dashboard at {address}: is the cluster up, "
                              "and is this its dashboard address (http://HEAD:8265)?") from None
    except AuthenticationError as e:
        why = str(e).strip().splitlines()[0]
        raise PermissionError(f"{address}: {why}; {TOKEN_HELP}") from None


def submit_entrypoint(entrypoint: str, address: str, working_dir=None, token: str | None = None,
                      env_vars: dict | None = None) -> str:
    """Submit a shell command as a Ray job run from an upload of `working_dir`; return the job id."""
    runtime_env = {"working_dir": str(Path(working_dir or Path.cwd()).resolve()),
                   "excludes": list(EXCLUDES), "env_vars": {**ENV_VARS, **(env_vars or {})}}
    return job_client(address, token).submit_job(entrypoint=entrypoint, runtime_env=runtime_env)


def study_entrypoint(relative_study: str, storage: str | None = None, tracking_uri: str | None = None,
                     extra_args=()) -> str:
    """The job's command: `falw-ray run` joining the running cluster (--address auto), so that it
    neither starts a Ray of its own nor takes the cluster's present nodes for all it will ever have."""
    args = ["python", "-m", "falw_ray.cli", "run", relative_study, "--address", "auto",
            *(["--storage", storage] if storage else []), *(["--tracking-uri", tracking_uri] if tracking_uri else []),
            *map(str, extra_args)]
    return shlex.join(args)


def submit_study(study_path, address: str, extra_args=(), working_dir=None, wait: bool = False,
                 token: str | None = None, storage: str | None = None, tracking_uri: str | None = None) -> str:
    """Submit `falw-ray run STUDY --address auto` as a Ray job; with wait=True, block until it ends and
    raise if it failed. ``storage`` and ``tracking_uri`` override the study's and, like them, must be
    absolute paths or a server URI on the cluster (see cluster_locations); nothing is submitted otherwise."""
    wd = Path(working_dir or Path.cwd()).resolve()
    study = Path(study_path).resolve()
    try:
        rel = study.relative_to(wd).as_posix()
    except ValueError:  # only the working dir is uploaded: a path outside it does not exist there
        raise ValueError(f"{study_path}: the study file must lie inside the working dir {wd}, "
                         "which is what gets uploaded to the cluster") from None
    if not study.is_file():
        raise FileNotFoundError(f"{study_path}: no such study file")
    cluster_locations(study_path, storage, tracking_uri)
    entrypoint = study_entrypoint(rel, storage, tracking_uri, extra_args)
    job_id = submit_entrypoint(entrypoint, address, wd, token)
    if wait:
        status = wait_for_job(address, job_id, token=token)
        if status.value != "SUCCEEDED":
            raise RuntimeError(f"job {job_id} ended {status.value}; see `ray job logs --address {address} {job_id}`")
    return job_id


def follow_hint(address: str, job_id: str, columns: int | None = None) -> str:
    """Shell commands to follow the job, each fitted to ``columns`` (the terminal's width) and still
    runnable when pasted; the CLI needs RAY_AUTH_MODE=token to send a token."""
    env = "RAY_AUTH_MODE=token " if "RAY_AUTH_MODE" not in os.environ and _auth_headers(None) else ""
    where = [f"--address {shlex.quote(address)}", shlex.quote(job_id)]
    columns = columns or width()
    return "\n".join(shell(label, [f"{env}ray job {verb}", *where], columns)
                     for label, verb in (("follow: ", "logs --follow"), ("status: ", "status"), ("stop:   ", "stop")))


def wait_for_job(address: str, job_id: str, timeout_s: float | None = None, token: str | None = None,
                 poll_s: float = 2.0):
    """Poll until the job is SUCCEEDED, FAILED or STOPPED and return that JobStatus (None: no time limit)."""
    client = job_client(address, token)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} at {address} still {status.value} after {timeout_s:g}s")
        time.sleep(poll_s)
