"""Connecting to a running Ray cluster that uses token authentication (Ray 2.60's default).

`ray start` turns token mode on whenever a token exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token). A client does so too when it connects with no address or "auto", but not for
an explicit address (ray/_private/worker.py, init): `ray.init(address="HEAD:6379")` then sends no
token, the GCS refuses every call, and Ray's C++ client retries for about 20 seconds, logging a
warning each second, before raising "Failed to connect to Ray cluster at ...". Likewise the
JobSubmissionClient attaches a token only when this process has RAY_AUTH_MODE=token.

So: ``prepare_ray_auth`` turns token mode on when a token is available here (unless RAY_AUTH_MODE
says otherwise) and asks the GCS once, with a few seconds' timeout, whether it takes this
process's credentials; a refusal or a silent address becomes one line saying what to set
(``connect_error``), raised as ConnectionError before Ray's own retries start. ``connect_ray``
does both around ``ray.init``. A cluster without authentication ignores a token it is sent.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

TOKEN_HELP = ("give this machine the cluster's token: RAY_AUTH_TOKEN=<token>, RAY_AUTH_TOKEN_PATH=<file>, or "
              "the file ~/.ray/auth_token (`ray get-auth-token` on the head prints it)")
ADDRESS_HELP = ("is the cluster up, and is this its GCS address (HEAD:6379, as `ray start --head` printed it)? "
                "The dashboard's http://HEAD:8265 is for `falw-ray submit`")
PROBE_TIMEOUT_S = 10.0
_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9_.:-]+?\]?:\d+$")


def _mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower()


def ray_token() -> str | None:
    """The token Ray finds here, where Ray's token-authentication guide says it looks, in its order:
    RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token; whatever
    RAY_AUTH_MODE says. None when there is none (or its file cannot be read)."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(named).expanduser() if named else Path.home() / ".ray" / "auth_token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def token_source() -> str:
    """Where Ray's loader takes the token from, for messages (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return str(Path.home() / ".ray" / "auth_token")


def auth_headers(token: str | None = None) -> dict:
    """The HTTP Authorization header for an explicit token, else for the token Ray would find
    (none when RAY_AUTH_MODE=disabled)."""
    if token:
        return {"Authorization": f"Bearer {token}"}
    if _mode() == "disabled":
        return {}
    found = ray_token()
    return {"Authorization": f"Bearer {found}"} if found else {}


def _enable_token_mode() -> None:
    """What Ray does for a local cluster: RAY_AUTH_MODE=token for this process (and its children),
    and Ray's cached config re-read so this process's client sends the token too."""
    os.environ["RAY_AUTH_MODE"] = "token"
    _reread_ray_config()


def _reread_ray_config() -> None:
    """SHIM, the one use of Ray's private modules here: Ray reads RAY_AUTH_MODE into its config once,
    when it is imported, and has no public call to read it again (its own token set-up calls this
    same one). tests/test_connect.py fails when a Ray release changes that."""
    from ray._raylet import Config

    Config.initialize("")


def _probe_target(address: str | None) -> str | None:
    """The GCS host:port that ray.init(address) will dial, when it is one (RAY_ADDRESS wins in Ray)."""
    target = os.environ.get("RAY_ADDRESS") or address
    if not target or target in ("auto", "local") or "://" in target:
        return None
    return target if _HOST_PORT.match(target) else None


def prepare_ray_auth(address: str | None, probe: bool = True) -> None:
    """Before ``ray.init(address=address)``: send Ray's token when one is available here (sets
    RAY_AUTH_MODE=token unless RAY_AUTH_MODE is set already), then, for a HOST:PORT address, ask
    the GCS once whether it accepts this process. Raises ConnectionError with one line saying what
    to set when it refuses or nothing answers; a Ray already initialised is left alone."""
    import ray

    if ray.is_initialized():
        return
    if address and address.startswith(("http://", "https://")):
        raise ConnectionError(f"--address {address} is a dashboard address (for `falw-ray submit`); a study run "
                              "connects to the cluster's GCS address, HEAD:6379")
    if not _mode() and ray_token() is not None:
        _enable_token_mode()
    target = _probe_target(address)
    if probe and target is not None:
        _probe(address, target)


def _probe(address: str, target: str) -> None:
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray's generated stubs moved: let ray.init find out
        return
    metadata = None
    if _mode() == "token":
        token = ray_token()
        metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        try:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(connect_error(address, e)) from None
            # Anything else (an older or newer GCS, a proxy): ray.init decides, connect_error words it.


def connect_error(address: str | None, exc: BaseException) -> str:
    """One line for a failed connection to the Ray cluster at ``address``: what went wrong and what
    to set (the token, or the address), never the token itself."""
    import grpc

    at = address or os.environ.get("RAY_ADDRESS") or "auto"
    where = f"the Ray cluster at {at}"
    code = exc.code() if isinstance(exc, grpc.RpcError) else None
    text = " ".join(str(exc).split()) if code is None else f"{code.name}: {' '.join((exc.details() or '').split())}"
    refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or (
        code is None and re.search(r"authenticat|auth token", text, re.I) is not None)
    sent = _mode() == "token" and ray_token() is not None
    if refused:
        if _mode() == "disabled":
            return f"{where} requires Ray's token, but RAY_AUTH_MODE=disabled here: unset it and {TOKEN_HELP}"
        if sent:
            return (f"{where} refused this machine's Ray token (from {token_source()}), which is not the "
                    f"cluster's: {TOKEN_HELP}")
        return f"{where} requires Ray's token (token authentication) and none is set here: {TOKEN_HELP}"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"no Ray cluster answers at {at} ({code.name}): {ADDRESS_HELP}"
    hint = ADDRESS_HELP if sent or _mode() == "disabled" else (
        f"if the cluster uses token authentication (Ray's default), {TOKEN_HELP}; else: {ADDRESS_HELP}")
    return f"cannot connect to {where} ({text[:300]}): {hint}"


def connect_ray(address: str | None, **init_kwargs):
    """``ray.init(address=address, **init_kwargs)`` with Ray's token when one is available here; a
    failure to connect to a running cluster is raised as ConnectionError with one line.

    No address starts a Ray of the study's own (``"local"``): Ray would otherwise join the latest
    cluster any ``ray start`` left on this machine, another user's or another study's, whose
    nodes can go away under the study."""
    import ray
    from ray.exceptions import AuthenticationError

    if address:
        prepare_ray_auth(address)
    try:
        return ray.init(address=address or "local", **init_kwargs)
    except (ConnectionError, AuthenticationError) as e:
        if not address:
            raise
        raise ConnectionError(connect_error(address, e)) from None
