"""Submit a study to a running Ray cluster as a Ray job.

A job (not `ray.init(address=...)` from the laptop) keeps the Tune driver on the
cluster: it survives the client going away, and its logs stay with the cluster.

Token auth in Ray 2.60: `ray start` turns token mode on whenever a token exists
(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), but the Python
JobSubmissionClient only attaches it when *this* process has RAY_AUTH_MODE=token
(ray/_private/authentication/http_token_authentication.py,
get_auth_headers_if_auth_enabled). So, unless RAY_AUTH_MODE=disabled, we load the
token through Ray's own loader and send the Authorization header ourselves; a
cluster without auth ignores it.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

# Gitignore-style patterns: the working dir is zipped and uploaded, and a .venv is GBs. Ray 2.60 skips
# .git/.venv/venv/__pycache__ itself, unless RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES says otherwise.
EXCLUDES = [".venv", "venv", ".git", "__pycache__", "*.pyc", "*.db", "*.sqlite", "mlruns", "mlartifacts",
            "falw_results", "ray_results", ".pytest_cache", "*.egg-info"]
# Silence warnings that would bury the study's own output in the job log.
ENV_VARS = {"RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
            "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            "PYTHONUNBUFFERED": "1"}


def _auth_headers(token: str | None) -> dict:
    """The Authorization header for an explicit token, else for the token Ray would find."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the C++ loader caches; HOME or RAY_AUTH_TOKEN* may have changed since
    return loader.get_token_for_http_header(ignore_auth_mode=True)


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
        raise PermissionError(f"{address}: {why} (give the cluster's token via token=, RAY_AUTH_TOKEN, "
                              "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)") from None


def submit_entrypoint(entrypoint: str, address: str, working_dir=None, token: str | None = None,
                      env_vars: dict | None = None) -> str:
    """Submit a shell command as a Ray job run from an upload of `working_dir`; return the job id."""
    runtime_env = {"working_dir": str(Path(working_dir or Path.cwd()).resolve()),
                   "excludes": list(EXCLUDES), "env_vars": {**ENV_VARS, **(env_vars or {})}}
    return job_client(address, token).submit_job(entrypoint=entrypoint, runtime_env=runtime_env)


def submit_study(study_path, address: str, extra_args=(), working_dir=None, wait: bool = False,
                 token: str | None = None) -> str:
    """Submit `falw-ray run STUDY` as a Ray job; with wait=True, block until it ends and raise if it failed."""
    wd = Path(working_dir or Path.cwd()).resolve()
    study = Path(study_path).resolve()
    try:
        rel = study.relative_to(wd).as_posix()
    except ValueError:  # only the working dir is uploaded: a path outside it does not exist there
        raise ValueError(f"{study_path}: the study file must lie inside the working dir {wd}, "
                         "which is what gets uploaded to the cluster") from None
    if not study.is_file():
        raise FileNotFoundError(f"{study_path}: no such study file")
    entrypoint = shlex.join(["python", "-m", "falw_ray.cli", "run", rel, *map(str, extra_args)])
    job_id = submit_entrypoint(entrypoint, address, wd, token)
    if wait:
        status = wait_for_job(address, job_id, token=token)
        if status.value != "SUCCEEDED":
            raise RuntimeError(f"job {job_id} ended {status.value}; see `ray job logs --address {address} {job_id}`")
    return job_id


def follow_hint(address: str, job_id: str) -> str:
    """Shell commands to follow the job; the CLI needs RAY_AUTH_MODE=token to send a token."""
    env = "RAY_AUTH_MODE=token " if "RAY_AUTH_MODE" not in os.environ and _auth_headers(None) else ""
    a, j = shlex.quote(address), shlex.quote(job_id)
    return (f"follow: {env}ray job logs --follow --address {a} {j}\n"
            f"status: {env}ray job status --address {a} {j}\n"
            f"stop:   {env}ray job stop --address {a} {j}")


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
