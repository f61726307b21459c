"""Connecting to a Ray cluster, shared by everything that distributes work over one (the sweeps'
executor, `mmss fetch-images --distributor ray`): where a Ray address points, waiting a bounded
time for its head's port (Ray alone retries for many minutes against a closed port), and token
authentication as the head set it up. No Ray import at module level."""

from __future__ import annotations

import os

from mmss_lib.errors import DataError, MMSSError

DEFAULT_CONNECT_TIMEOUT = 30.0  # seconds to wait for a Ray head's port (--ray-timeout)


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address: ``HOST:PORT`` (GCS, default port 6379), ``ray://HOST:PORT``
    (Ray Client, default 10001); None for ``auto`` / ``local`` (found by Ray itself)."""
    a = str(address).strip()
    if a in ("auto", "local", ""):
        return None
    default = 6379
    if a.startswith("ray://"):
        a, default = a[len("ray://") :], 10001
    elif "://" in a:
        return None
    host, sep, port = a.rpartition(":")
    if not sep:
        host, port = a, str(default)
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError:
        raise DataError(f"ray address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto") from None


def wait_for_head(address: str, timeout: float, *, who: str = "ray") -> None:
    """Wait up to ``timeout`` seconds for something to listen at the Ray head's port; else a clear
    error naming the address (Ray itself retries for many minutes against a closed port)."""
    import socket
    import time

    end = head_endpoint(address)
    if end is None:
        return
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.create_connection(end, timeout=min(5.0, max(left, 0.1))):
                return
        except OSError as exc:
            last = exc
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
    raise MMSSError(
        f"{who}: nothing answers at the Ray cluster address {address!r} "
        f"(host {end[0]}, port {end[1]}) after {timeout:g} s ({last}); start the head there "
        "(`ray start --head --port=PORT`), fix --ray-address / RAY_ADDRESS, or wait longer with "
        "--ray-timeout SECONDS"
    )


def token_auth_like_the_head(address: str) -> None:
    """``ray start --head`` turns token authentication on by itself when a token is available
    (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``) and ``RAY_AUTH_MODE`` is
    unset, but ``ray.init`` does so only for ``auto``: with an explicit address the driver would be
    refused (``InvalidAuthToken``). Do what the head did: with a token and no ``RAY_AUTH_MODE``,
    set ``RAY_AUTH_MODE=token`` for this process (and its workers). An explicit ``RAY_AUTH_MODE``
    is left as it is."""
    if os.environ.get("RAY_AUTH_MODE") is not None or str(address).strip() in ("auto", ""):
        return
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
            os.environ["RAY_AUTH_MODE"] = "token"
            Config.initialize("")
    except Exception:  # noqa: BLE001 - another Ray version: leave authentication to Ray
        pass
