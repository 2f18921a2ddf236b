"""Start the server: one process, or several worker processes sharing the listening socket.

Every worker loads the configured files memory-mapped, so the operating system keeps one
copy of each file's pages for all of them. With several workers the config travels to
them as JSON in :data:`gsu.serve.app.CONFIG_ENV`, and Prometheus samples go through a
shared folder (``PROMETHEUS_MULTIPROC_DIR``) so that ``/metrics`` adds up all workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from gsu.serve.config import ServeConfig

log = logging.getLogger(__name__)

__all__ = ["serve", "check_files", "uvicorn_options"]


def uvicorn_options(config: ServeConfig, *, log_level: str = "info") -> dict:
    """Keyword arguments for ``uvicorn.run``: host, port, the fastest installed event loop
    and HTTP parser, no per-request access log."""
    opts = {"host": config.server.host, "port": config.server.port, "access_log": False, "log_level": log_level,
            "timeout_graceful_shutdown": 5}
    try:
        import uvloop  # noqa: F401

        opts["loop"] = "uvloop"
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        opts["loop"] = "asyncio"
    try:
        import httptools  # noqa: F401

        opts["http"] = "httptools"
    except ImportError:  # pragma: no cover
        opts["http"] = "h11"
    return opts


def check_files(config: ServeConfig) -> None:
    """Fail fast, with one line naming the file, on a missing or unreadable file (the
    headers of gsu files are read; the data is loaded later, by each worker)."""
    from gsu._format import read_header

    for name, ic in config.indexes.items():
        read_header(ic.path)
        for p in [ic.times, ic.time_ids, *ic.filters.values()]:
            if p is not None and not os.path.isfile(p):
                raise FileNotFoundError(f"indexes.{name}: {p}: no such file")
    for name, sc in config.stores.items():
        read_header(sc.behaviors)
        read_header(sc.items)
        if sc.model is not None and not os.path.isfile(sc.model):
            raise FileNotFoundError(f"stores.{name}.model: {sc.model}: no such file")


def serve(config: ServeConfig, *, log_level: str = "info") -> None:
    """Run the server until interrupted (blocking). Missing or broken files raise
    before anything is started."""
    import uvicorn

    check_files(config)
    from gsu.serve.app import CONFIG_ENV, create_app

    opts = uvicorn_options(config, log_level=log_level)
    if config.server.workers == 1:
        uvicorn.run(create_app(config), **opts)
        return
    os.environ[CONFIG_ENV] = config.to_json()
    prom = tempfile.mkdtemp(prefix="gsu-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom
    try:
        uvicorn.run("gsu.serve.app:app_from_env", factory=True, workers=config.server.workers, **opts)
    finally:
        shutil.rmtree(prom, ignore_errors=True)
