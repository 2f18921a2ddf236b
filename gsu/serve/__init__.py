"""``gsu serve``: retrieval as an HTTP service (Starlette under uvicorn).

- :mod:`gsu.serve.config`   — what to load and the per-request caps (TOML/JSON file or CLI specs)
- :mod:`gsu.serve.registry` — served indexes by name, memory-mapped, swapped when their file is replaced
- :mod:`gsu.serve.batcher`  — micro-batching of concurrent search requests per index
- :mod:`gsu.serve.app`      — the endpoints (search, retrieve, healthz, metrics)
- :mod:`gsu.serve.metrics`  — Prometheus series

Start it with ``gsu serve CONFIG`` or :func:`serve`; talk to it with :mod:`gsu.client`.
Running the server (:mod:`gsu.serve.app`, :func:`serve`) needs the ``serve`` extra (starlette, uvicorn,
prometheus-client); the config and wire-format modules need only numpy.
"""

from gsu.serve.config import IndexConfig, ServeConfig, ServerSettings, StoreConfig, config_from_specs, load_config
from gsu.serve.runner import serve

__all__ = ["IndexConfig", "ServeConfig", "ServerSettings", "StoreConfig", "config_from_specs", "load_config", "serve"]
