"""Ray's token, found here as Ray finds it, and the one shim into Ray's private modules (re-reading
its config): each checked against Ray's own code, so a Ray release that changes either fails here."""
from __future__ import annotations

import os

import pytest

from falw_ray.study import connect


@pytest.fixture()
def home(tmp_path, monkeypatch):
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def rays_own_token() -> str | None:
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    return loader.get_raw_token(ignore_auth_mode=True) if loader.has_token(ignore_auth_mode=True) else None


def test_the_token_is_the_one_rays_loader_finds_in_its_order(home, monkeypatch):
    assert connect.ray_token() is None and rays_own_token() is None
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("from-the-home-file\n")
    assert connect.ray_token() == rays_own_token() == "from-the-home-file"
    named = home / "named_token"
    named.write_text("from-the-named-file")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert connect.ray_token() == rays_own_token() == "from-the-named-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    assert connect.ray_token() == rays_own_token() == "from-the-environment"


def test_token_mode_reaches_rays_cached_config_through_the_shim(monkeypatch):
    """Setting RAY_AUTH_MODE is not enough for this process's Ray client (its config was read at
    import); the shim makes Ray see it. Ray's config is restored as it was afterwards."""
    from ray._private.authentication.authentication_token_setup import get_authentication_mode
    from ray._raylet import AuthenticationMode

    before = os.environ.get("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    connect._reread_ray_config()
    try:
        os.environ["RAY_AUTH_MODE"] = "token"
        assert get_authentication_mode() != AuthenticationMode.TOKEN, "Ray re-reads its config by itself now: drop the shim"
        connect._enable_token_mode()
        assert get_authentication_mode() == AuthenticationMode.TOKEN
    finally:
        monkeypatch.undo()
        assert os.environ.get("RAY_AUTH_MODE") == before
        connect._reread_ray_config()
