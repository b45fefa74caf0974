"""Ray's token, found here as Ray finds it, and the one shim into Ray's private modules (re-reading
its config): each checked against Ray's own code, so a Ray release that changes either fails here."""
from __future__ import annotations

import os


def in_fresh_process(body: str, env: dict | None = None) -> None:
    """Run ``body`` in its own interpreter: Ray's token loader and config are process-wide caches in
    C++, and a test that fills them with its own token would leave every later in-process Ray of the
    suite unable to start its GCS."""
    import subprocess
    import sys
    import textwrap

    script = "from falw_ray.study.cluster import connect\n" + textwrap.dedent(RAYS_OWN_TOKEN) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, **(env or {})}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


RAYS_OWN_TOKEN = """
def rays_own_token():
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()
    return loader.get_raw_token(ignore_auth_mode=True) if loader.has_token(ignore_auth_mode=True) else None
"""


def test_the_token_is_the_one_rays_loader_finds_in_its_order(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    os_environ = {**env, "HOME": str(tmp_path)}
    in_fresh_process(f"""
        import os
        from pathlib import Path
        for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            os.environ.pop(k, None)
        home = Path({str(tmp_path)!r})
        assert connect.ray_token() is None and rays_own_token() is None
        (home / ".ray").mkdir()
        (home / ".ray" / "auth_token").write_text("from-the-home-file\\n")
        assert connect.ray_token() == rays_own_token() == "from-the-home-file"
        named = home / "named_token"
        named.write_text("from-the-named-file")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(named)
        assert connect.ray_token() == rays_own_token() == "from-the-named-file"
        os.environ["RAY_AUTH_TOKEN"] = "from-the-environment"
        assert connect.ray_token() == rays_own_token() == "from-the-environment"
    """, os_environ)


def test_token_mode_reaches_rays_cached_config_through_the_shim():
    """Setting RAY_AUTH_MODE is not enough for a process's Ray client (its config was read at
    import); the shim makes Ray see it."""
    in_fresh_process("""
        import os
        from ray._private.authentication.authentication_token_setup import get_authentication_mode
        from ray._raylet import AuthenticationMode

        os.environ["RAY_AUTH_MODE"] = "disabled"
        connect._reread_ray_config()
        os.environ["RAY_AUTH_MODE"] = "token"
        assert get_authentication_mode() != AuthenticationMode.TOKEN, "Ray re-reads its config by itself now: drop the shim"
        connect._enable_token_mode()
        assert get_authentication_mode() == AuthenticationMode.TOKEN
    """)
