"""Prefect's ephemeral API server started by the CLI from its main thread, as a child that dies with it."""

from __future__ import annotations

import logging

from bvh_ops.children import die_with_parent

log = logging.getLogger("bvh_ops.cli.prefect_api")

def start_prefect_api() -> str | None:
    """Start Prefect's ephemeral API server now, from the calling (main) thread, as a child that
    dies with this process. Call it once, before any flow runs; Prefect's own clients then reuse
    the same server (it is a per-process singleton). Returns its URL, or None when
    PREFECT_API_URL points at a real server (nothing to start)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api import server as server_module

    server = server_module.SubprocessASGIServer()
    if server.running:
        return server.api_url
    preexec = die_with_parent()
    original = getattr(server, "_run_uvicorn_command", None)
    real_subprocess = getattr(server_module, "subprocess", None)
    if preexec is not None and callable(original) and real_subprocess is not None:

        class _PopenDyingWithUs:
            """Prefect's ``subprocess`` as its server module sees it while it starts uvicorn:
            Popen gains our preexec_fn, everything else is the real module."""

            def __getattr__(self, name: str):
                return getattr(real_subprocess, name)

            @staticmethod
            def Popen(*args, **kwargs):  # noqa: N802 - stands in for subprocess.Popen
                kwargs.setdefault("preexec_fn", preexec)
                return real_subprocess.Popen(*args, **kwargs)

        def run_uvicorn():
            server_module.subprocess = _PopenDyingWithUs()
            try:
                return original()
            finally:
                server_module.subprocess = real_subprocess

        # An instance attribute: also used when Prefect retries on another port.
        server._run_uvicorn_command = run_uvicorn
    else:
        log.warning("the ephemeral Prefect API server will not die with this process (no PR_SET_PDEATHSIG "
                    "or an unknown Prefect version)")
    server.start()
    return server.api_url
