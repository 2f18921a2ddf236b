"""Server configuration: what to load and the limits every request is held to.

A config file is TOML (``.toml``) or JSON (``.json``) with this shape (every key but the
paths is optional)::

    [server]
    host = "127.0.0.1"        # loopback unless told otherwise
    port = 8000
    workers = 1               # processes; each memory-maps the same files
    threads = 1               # numba / BLAS threads per worker
    search_threads = 0        # 0: searches run on the event loop (gsu's kernels hold the GIL); N: a pool of N threads
    max_batch = 64            # queries per micro-batch
    max_wait_ms = 0.0         # how long a micro-batch waits for requests still arriving (0: none)
    max_k = 1000
    max_queries = 1024        # query rows per search request
    max_filter_ids = 1000000  # ids in one request's filter
    max_targets = 10000       # targets per retrieve request
    max_body_bytes = 33554432
    watch_interval_s = 0.5    # how often index files are checked for a new version

    [indexes.items]
    path = "items.gsu"
    times = "item_times.npy"       # optional: one value per item id, for time-window filters
    time_ids = "item_ids.npy"      # optional: the item id of each value (default 0..n-1)
    search = { effort = 1.0 }      # default search settings
    [indexes.items.filters]        # named stored filters: .npy files of allowed ids
    recent = "recent_ids.npy"

    [stores.default]
    behaviors = "store.gsu"        # BehaviorStore.save
    items = "items_table.gsu"      # ItemTable.save
    model = "soft.pt"              # optional: a gsu.ctr checkpoint for ESU scores
    default_method = "soft"
    [stores.default.methods]       # retrieval methods served, by name -> make_method settings
    soft = {}
    hard = { score = "ip" }
    simhash = { n_bits = 128 }

Relative paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["IndexConfig", "ServeConfig", "ServerSettings", "StoreConfig", "load_config", "config_from_specs"]


@dataclass(frozen=True)
class ServerSettings:
    """Process-level settings and per-request caps (see the module docstring)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 1
    search_threads: int = 0
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_k: int = 1000
    max_queries: int = 1024
    max_filter_ids: int = 1_000_000
    max_targets: int = 10_000
    max_body_bytes: int = 32 << 20
    watch_interval_s: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "host":
                if not isinstance(v, str) or not v:
                    raise ValueError(f"server.host: expected a non-empty string, got {v!r}")
                continue
            if f.type in ("int", int):
                if type(v) is not int or v < (0 if f.name in ("port", "search_threads") else 1):
                    raise ValueError(f"server.{f.name}: expected a positive integer, got {v!r}")
            else:
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"server.{f.name}: expected a non-negative number, got {v!r}")
        if self.watch_interval_s <= 0:
            raise ValueError(f"server.watch_interval_s: expected > 0, got {self.watch_interval_s}")


@dataclass(frozen=True)
class IndexConfig:
    """One served index: its file, optional item times (time-window filters), named
    filters (name -> ``.npy`` of ids) and default search settings."""

    path: str
    times: str | None = None
    time_ids: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreConfig:
    """One behavior store with its item table, the retrieval methods served over it
    (name -> :func:`gsu.retrieval.registry.make_method` settings) and an optional ESU
    checkpoint."""

    behaviors: str
    items: str
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: {"soft": {}})
    default_method: str | None = None
    model: str | None = None
    default_k: int = 50


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``gsu serve`` loads."""

    server: ServerSettings = field(default_factory=ServerSettings)
    indexes: dict[str, IndexConfig] = field(default_factory=dict)
    stores: dict[str, StoreConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.indexes and not self.stores:
            raise ValueError("config: nothing to serve (give at least one index or behavior store)")
        for name in [*self.indexes, *self.stores]:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"config: bad name {name!r} (non-empty, no '/')")
        for name, s in self.stores.items():
            if not s.methods:
                raise ValueError(f"stores.{name}.methods: give at least one method")
            if s.default_method is not None and s.default_method not in s.methods:
                raise ValueError(f"stores.{name}.default_method {s.default_method!r} is not one of its methods {sorted(s.methods)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, base: str | os.PathLike | None = None) -> "ServeConfig":
        """Build from a parsed file (``base``: folder that relative paths are taken from)."""
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a table at the top level, got {type(d).__name__}")
        unknown = set(d) - {"server", "indexes", "stores"}
        if unknown:
            raise ValueError(f"config: unknown section(s) {sorted(unknown)}; expected server, indexes, stores")

        def path(v: Any, where: str) -> str:
            if not isinstance(v, str) or not v:
                raise ValueError(f"{where}: expected a file path, got {v!r}")
            p = Path(v)
            if base is not None and not p.is_absolute():
                p = Path(base) / p
            return str(p)

        def table(v: Any, where: str) -> dict[str, Any]:
            if not isinstance(v, dict):
                raise ValueError(f"{where}: expected a table, got {type(v).__name__}")
            return v

        def build(kind: type, v: dict[str, Any], where: str) -> Any:
            names = {f.name for f in fields(kind)}
            bad = set(v) - names
            if bad:
                raise ValueError(f"{where}: unknown key(s) {sorted(bad)}; expected some of {sorted(names)}")
            return kind(**v)

        server = build(ServerSettings, dict(table(d.get("server", {}), "server")), "server")
        indexes = {}
        for name, v in table(d.get("indexes", {}), "indexes").items():
            v = dict(table(v, f"indexes.{name}"))
            v["path"] = path(v.get("path"), f"indexes.{name}.path")
            for key in ("times", "time_ids"):
                if v.get(key) is not None:
                    v[key] = path(v[key], f"indexes.{name}.{key}")
            v["filters"] = {fn: path(fp, f"indexes.{name}.filters.{fn}") for fn, fp in table(v.get("filters", {}), f"indexes.{name}.filters").items()}
            v["search"] = dict(table(v.get("search", {}), f"indexes.{name}.search"))
            indexes[name] = build(IndexConfig, v, f"indexes.{name}")
        stores = {}
        for name, v in table(d.get("stores", {}), "stores").items():
            v = dict(table(v, f"stores.{name}"))
            v["behaviors"] = path(v.get("behaviors"), f"stores.{name}.behaviors")
            v["items"] = path(v.get("items"), f"stores.{name}.items")
            if v.get("model") is not None:
                v["model"] = path(v["model"], f"stores.{name}.model")
            if "methods" in v:
                v["methods"] = {mn: dict(table(mp, f"stores.{name}.methods.{mn}")) for mn, mp in table(v["methods"], f"stores.{name}.methods").items()}
            stores[name] = build(StoreConfig, v, f"stores.{name}")
        return cls(server=server, indexes=indexes, stores=stores)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        return cls.from_dict(json.loads(text))


def load_config(path: str | os.PathLike) -> ServeConfig:
    """Read a ``.toml`` or ``.json`` config file (relative paths are relative to its folder)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    raw = p.read_bytes()
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            d = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid TOML ({e})") from None
    elif p.suffix.lower() == ".json":
        try:
            d = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
    else:
        raise ValueError(f"{p}: unknown config suffix {p.suffix!r} (expected .toml or .json)")
    try:
        return ServeConfig.from_dict(d, base=p.parent)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{p}: {e}") from None


def config_from_specs(
    index_specs: list[str] | None = None,
    store_specs: list[str] | None = None,
    *,
    server: dict[str, Any] | None = None,
) -> ServeConfig:
    """The simple case: ``["name=path.gsu", ...]`` indexes and
    ``["name=behaviors.gsu,items.gsu", ...]`` stores (the default ``soft`` method),
    with ``server`` settings."""
    d: dict[str, Any] = {"server": dict(server or {}), "indexes": {}, "stores": {}}
    for spec in index_specs or ():
        name, sep, p = spec.partition("=")
        if not sep or not name or not p:
            raise ValueError(f"--index expects NAME=PATH, got {spec!r}")
        d["indexes"][name] = {"path": p}
    for spec in store_specs or ():
        name, sep, p = spec.partition("=")
        parts = p.split(",")
        if not sep or not name or len(parts) != 2 or not all(parts):
            raise ValueError(f"--store expects NAME=BEHAVIORS.gsu,ITEMS.gsu, got {spec!r}")
        d["stores"][name] = {"behaviors": parts[0], "items": parts[1]}
    return ServeConfig.from_dict(d)
