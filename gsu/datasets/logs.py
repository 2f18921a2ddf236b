"""Behavior logs: Taobao UserBehavior and MovieLens, as arrays sorted by user then time.

A :class:`BehaviorLog` is five aligned 1-D arrays (one entry per behavior) sorted
by ``(user, timestamp)`` with a *stable* sort, so behaviors sharing a timestamp
keep their order in the file. :meth:`BehaviorLog.user_offsets` gives the CSR view
(one contiguous slice per user) that behavior stores and retrievers consume.

Behavior codes (``behavior`` column, int8):

=====  =================  ===============================================
code   Taobao             meaning
=====  =================  ===============================================
0      ``pv``             page view (an impression-level click)
1      ``cart``           added to cart
2      ``fav``            added to favourites
3      ``buy``            purchase
=====  =================  ===============================================

MovieLens rows carry the rating in half stars: ``behavior = round(2 * rating)``
(1..10, so 8 means 4.0 stars) and ``value`` holds the rating itself (float32).
The usual click label for MovieLens is ``value >= 4``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gsu.errors import DataFormatError

__all__ = [
    "BEHAVIOR_CODES",
    "BEHAVIOR_NAMES",
    "BehaviorLog",
    "read_taobao",
    "read_movielens",
    "read_movielens_movies",
    "NO_GENRE",
    "LogSchema",
    "EventLog",
    "read_log",
]

logger = logging.getLogger(__name__)

BEHAVIOR_CODES: dict[str, int] = {"pv": 0, "cart": 1, "fav": 2, "buy": 3}
"""Taobao behavior string -> int8 code stored in :attr:`BehaviorLog.behavior`."""
BEHAVIOR_NAMES: tuple[str, ...] = ("pv", "cart", "fav", "buy")
"""Inverse of :data:`BEHAVIOR_CODES` (index = code)."""
NO_GENRE = "(no genres listed)"
"""MovieLens' marker for a movie without genres; kept as a genre of its own."""

PathLike = str | os.PathLike


@dataclass(frozen=True)
class BehaviorLog:
    """Behaviors of many users, sorted by user then timestamp (stable).

    Attributes:
        user: (N,) int64 user ids (non-decreasing).
        item: (N,) int64 item ids (raw ids from the file).
        category: (N,) int64 category id of the item (Taobao: the file's category
            id; MovieLens: the primary genre's index into ``movies["genre_names"]``).
        behavior: (N,) int8 behavior code (see the module docstring).
        timestamp: (N,) int64 seconds since the epoch; non-decreasing within a user.
        value: (N,) float32 or None — an explicit rating (MovieLens), else None.
    """

    user: np.ndarray
    item: np.ndarray
    category: np.ndarray
    behavior: np.ndarray
    timestamp: np.ndarray
    value: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        n = self.user.shape[0]
        for name in ("item", "category", "behavior", "timestamp") + (("value",) if self.value is not None else ()):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"BehaviorLog.{name}: expected shape ({n},), got {arr.shape}")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return int(np.count_nonzero(np.diff(self.user))) + 1 if len(self) else 0

    def user_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR view over users: ``(user_ids (U,) int64, indptr (U+1,) int64)``.

        The behaviors of ``user_ids[j]`` are rows ``indptr[j]:indptr[j+1]``, in time order.
        """
        if not len(self):
            return np.zeros(0, np.int64), np.zeros(1, np.int64)
        starts = np.flatnonzero(np.r_[True, self.user[1:] != self.user[:-1]])
        indptr = np.r_[starts, len(self)].astype(np.int64)
        return self.user[starts].astype(np.int64), indptr

    def take(self, rows: np.ndarray) -> "BehaviorLog":
        """A new log holding ``rows`` (a boolean mask or sorted positions) of this one."""
        return BehaviorLog(
            self.user[rows],
            self.item[rows],
            self.category[rows],
            self.behavior[rows],
            self.timestamp[rows],
            None if self.value is None else self.value[rows],
        )


def _sorted_log(user, item, category, behavior, timestamp, value=None) -> BehaviorLog:
    order = np.lexsort((timestamp, user))  # lexsort is stable: ties keep file order
    return BehaviorLog(
        np.ascontiguousarray(user[order], dtype=np.int64),
        np.ascontiguousarray(item[order], dtype=np.int64),
        np.ascontiguousarray(category[order], dtype=np.int64),
        np.ascontiguousarray(behavior[order], dtype=np.int8),
        np.ascontiguousarray(timestamp[order], dtype=np.int64),
        None if value is None else np.ascontiguousarray(value[order], dtype=np.float32),
    )


def _existing(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a folder, expected a CSV file")
    if p.stat().st_size == 0:
        raise DataFormatError(f"{p}: file is empty (0 bytes)")
    return p


def _first_line(p: Path) -> str:
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.strip()
    raise DataFormatError(f"{p}: file holds only blank lines")


def _arrow_error(p: Path, e: Exception) -> DataFormatError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return DataFormatError(f"{p}: cannot parse as CSV: {msg}")


def read_taobao(path: PathLike, *, max_rows: int | None = None) -> BehaviorLog:
    """Read a Taobao UserBehavior CSV (``user,item,category,behavior,timestamp``).

    The file has no header (a header line whose first field is not a number is
    skipped). ``behavior`` is one of ``pv``, ``cart``, ``fav``, ``buy`` and is
    stored as the int8 codes of :data:`BEHAVIOR_CODES`.

    Args:
        path: the CSV file (the full data set is ~100 M rows; reading is streamed
            through pyarrow in blocks).
        max_rows: read at most this many rows from the start of the file.

    Returns:
        A :class:`BehaviorLog` sorted by user then timestamp (stable).

    Raises:
        DataFormatError naming the file: empty file, a row without exactly five
        fields, a non-integer id or timestamp, an unknown behavior string.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    p = _existing(path)
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"max_rows: expected a positive integer or None, got {max_rows!r}")
    first = _first_line(p).split(",")
    skip = 1 if first and not first[0].strip().lstrip("-").isdigit() else 0
    names = ["user", "item", "category", "behavior", "timestamp"]
    types = {"user": pa.int64(), "item": pa.int64(), "category": pa.int64(), "behavior": pa.string(), "timestamp": pa.int64()}
    try:
        reader = pacsv.open_csv(
            p,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=skip, block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
        )
        batches = []
        n = 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if max_rows is not None and n >= max_rows:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise _arrow_error(p, e) from None
    if max_rows is not None:
        table = table.slice(0, max_rows)
    if table.num_rows == 0:
        raise DataFormatError(f"{p}: no behavior rows")
    for name in names:
        if table.column(name).null_count:
            raise DataFormatError(f"{p}: column {name!r} has {table.column(name).null_count} empty value(s)")
    beh = table.column("behavior").combine_chunks().dictionary_encode()
    words = [str(w) for w in beh.dictionary.to_pylist()]
    unknown = [w for w in words if w not in BEHAVIOR_CODES]
    if unknown:
        raise DataFormatError(f"{p}: unknown behavior type(s) {unknown[:5]}; expected one of {list(BEHAVIOR_CODES)}")
    lut = np.array([BEHAVIOR_CODES[w] for w in words], dtype=np.int8)
    codes = lut[beh.indices.to_numpy(zero_copy_only=False)]
    col = lambda name: table.column(name).to_numpy()  # noqa: E731
    return _sorted_log(col("user"), col("item"), col("category"), codes, col("timestamp"))


_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_ARTICLE = re.compile(r"^(.*?), (The|A|An)(\s\(.*\))?$")


def read_movielens_movies(path: PathLike) -> dict[str, Any]:
    """Read MovieLens ``movies.csv`` (``movieId,title,genres``), sorted by movie id.

    Returns a dict of aligned arrays (a light data frame; row ``r`` is one movie;
    ``np.searchsorted(movies["movie_id"], ids)`` maps movie ids to rows):

    - ``movie_id``: (M,) int64, ascending.
    - ``title``: (M,) str — the title as in the file, e.g. ``"Matrix, The (1999)"``.
    - ``name``: (M,) str — the title without the year, a trailing ", The"/", A"/", An"
      moved to the front (``"The Matrix"``).
    - ``year``: (M,) int64, -1 when the title carries no year.
    - ``genres``: list of M lists of genre names (file order).
    - ``genre_names``: (G,) str — the category vocabulary, sorted; ``"(no genres listed)"``
      is kept as a genre of its own so that every movie has a primary category.
    - ``category``: (M,) int64 primary category = index of the movie's first genre.
    - ``genre_multi_hot``: (M, G) bool — all of a movie's genres.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    p = _existing(path)
    try:
        t = pacsv.read_csv(
            p,
            convert_options=pacsv.ConvertOptions(
                column_types={"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()},
                include_columns=["movieId", "title", "genres"],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as e:
        raise DataFormatError(
            f"{p}: not a MovieLens movies.csv (expected the header movieId,title,genres): {str(e).splitlines()[0]}"
        ) from None
    if t.num_rows == 0:
        raise DataFormatError(f"{p}: no movies")
    movie_id = t.column("movieId").to_numpy()
    if t.column("movieId").null_count:
        raise DataFormatError(f"{p}: {t.column('movieId').null_count} movie(s) without a movieId")
    order = np.argsort(movie_id, kind="stable")
    movie_id = movie_id[order]
    if (np.diff(movie_id) == 0).any():
        raise DataFormatError(f"{p}: movieId {int(movie_id[1:][np.diff(movie_id) == 0][0])} appears twice")
    all_titles = t.column("title").to_pylist()
    all_genres = t.column("genres").to_pylist()
    titles = [all_titles[i] for i in order]
    genres = [[g for g in (all_genres[i] or NO_GENRE).split("|") if g] for i in order]
    genres = [g if g else [NO_GENRE] for g in genres]
    genre_names = sorted({g for gs in genres for g in gs})
    gid = {g: j for j, g in enumerate(genre_names)}
    multi = np.zeros((len(titles), len(genre_names)), dtype=bool)
    for r, gs in enumerate(genres):
        multi[r, [gid[g] for g in gs]] = True
    years = np.full(len(titles), -1, dtype=np.int64)
    names = []
    for r, title in enumerate(titles):
        title = title.strip()
        m = _YEAR.search(title)
        name = title
        if m:
            years[r] = int(m.group(1))
            name = title[: m.start()].strip()
        a = _ARTICLE.match(name)
        if a:
            name = f"{a.group(2)} {a.group(1)}{a.group(3) or ''}"
        names.append(name)
    return {
        "movie_id": movie_id.astype(np.int64),
        "title": np.array(titles, dtype=str),
        "name": np.array(names, dtype=str),
        "year": years,
        "genres": genres,
        "genre_names": np.array(genre_names, dtype=str),
        "category": np.array([gid[gs[0]] for gs in genres], dtype=np.int64),
        "genre_multi_hot": multi,
    }


def read_movielens(folder: PathLike) -> tuple[BehaviorLog, dict[str, Any]]:
    """Read a MovieLens folder (``ratings.csv`` + ``movies.csv``).

    Returns:
        log: :class:`BehaviorLog` sorted by user then timestamp (stable): ``item`` is
            the movieId, ``category`` the movie's primary genre id (see
            :func:`read_movielens_movies`), ``behavior`` the rating in half stars
            (int8 1..10), ``value`` the rating (float32, 0.5..5).
        movies: the dict returned by :func:`read_movielens_movies`.

    Raises:
        DataFormatError naming the file: missing columns, non-numeric fields, a
        rating outside (0, 5], a rated movie missing from ``movies.csv``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected a MovieLens folder with ratings.csv and movies.csv)")
    movies = read_movielens_movies(folder / "movies.csv")
    rp = _existing(folder / "ratings.csv")
    cols = {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
    try:
        t = pacsv.read_csv(rp, convert_options=pacsv.ConvertOptions(column_types=cols, include_columns=list(cols)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as e:
        raise DataFormatError(
            f"{rp}: not a MovieLens ratings.csv (expected the header userId,movieId,rating,timestamp): {str(e).splitlines()[0]}"
        ) from None
    if t.num_rows == 0:
        raise DataFormatError(f"{rp}: no ratings")
    for name in cols:
        if t.column(name).null_count:
            raise DataFormatError(f"{rp}: column {name!r} has {t.column(name).null_count} empty value(s)")
    user = t.column("userId").to_numpy()
    item = t.column("movieId").to_numpy()
    rating = t.column("rating").to_numpy()
    ts = t.column("timestamp").to_numpy()
    if not np.isfinite(rating).all() or (rating <= 0).any() or (rating > 5).any():
        raise DataFormatError(f"{rp}: ratings must lie in (0, 5]; found values in [{rating.min()}, {rating.max()}]")
    half = np.round(rating * 2)
    if (half != rating * 2).any():
        raise DataFormatError(f"{rp}: ratings must be multiples of 0.5")
    rows = np.searchsorted(movies["movie_id"], item)
    rows_c = np.minimum(rows, len(movies["movie_id"]) - 1)
    missing = movies["movie_id"][rows_c] != item
    if missing.any():
        raise DataFormatError(
            f"{rp}: {int(missing.sum())} rating(s) of {np.unique(item[missing]).size} movie(s) absent from movies.csv "
            f"(first: movieId {int(item[missing][0])})"
        )
    log = _sorted_log(user, item, movies["category"][rows_c], half.astype(np.int8), ts, rating.astype(np.float32))
    return log, movies


# ============================================================================ schema-driven logs


SCHEMA_KEYS = ("user", "item", "timestamp", "label", "label_threshold", "category", "behavior", "categorical",
               "numeric", "history", "time_unit", "columns", "delimiter", "positive_behaviors")


@dataclass(frozen=True)
class LogSchema:
    """Which columns of a Parquet or CSV behavior log mean what.

    Attributes:
        user, item, timestamp: required column names (ids may be integers or strings;
            the timestamp an integer, a float, a Parquet/Arrow timestamp or an ISO-8601 string).
        label: optional 0/1 (or boolean) click column: the rows are *impressions*; without it
            every row is a positive (a log of behaviors only; negatives are sampled).
        label_threshold: with ``label`` naming a numeric column (e.g. a rating), the click is
            ``value >= label_threshold``.
        category: optional item category column. behavior: optional behavior-type column
            (strings or integers; codes follow the sorted distinct values).
        positive_behaviors: with ``behavior`` and no ``label``: the behavior values that count
            as a click; other rows stay in the history but are not positives (empty = all).
        categorical / numeric: extra item feature columns (an item's value is the one of its
            earliest row, so no sample sees a value first logged after it).
        history: "positives" (the history holds the clicked rows; the default with a label)
            or "all" (every row is a behavior; with a label, its value becomes the behavior type).
        time_unit: "s" (default), "ms" or "us" for integer timestamps.
        columns: names of a headerless CSV's columns, in file order (None: the file has a header).
        delimiter: CSV field separator.
    """

    user: str
    item: str
    timestamp: str
    label: str | None = None
    label_threshold: float | None = None
    category: str | None = None
    behavior: str | None = None
    positive_behaviors: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    history: str = "auto"
    time_unit: str = "s"
    columns: tuple[str, ...] | None = None
    delimiter: str = ","

    def __post_init__(self) -> None:
        for name in ("user", "item", "timestamp"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"LogSchema.{name}: expected a column name, got {v!r}")
        if self.history not in ("auto", "positives", "all"):
            raise ValueError(f"LogSchema.history: expected 'auto', 'positives' or 'all', got {self.history!r}")
        if self.time_unit not in ("s", "ms", "us"):
            raise ValueError(f"LogSchema.time_unit: expected 's', 'ms' or 'us', got {self.time_unit!r}")
        if self.label_threshold is not None and self.label is None:
            raise ValueError("LogSchema.label_threshold: needs a label column")
        if self.positive_behaviors and self.behavior is None:
            raise ValueError("LogSchema.positive_behaviors: needs a behavior column")
        if self.positive_behaviors and self.label is not None:
            raise ValueError("LogSchema.positive_behaviors: give either a label column or positive behaviors, not both")
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        object.__setattr__(self, "positive_behaviors", tuple(str(b) for b in self.positive_behaviors))
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))
        names = self.used_columns()
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"LogSchema: column(s) {dup} given more than one role")

    @property
    def effective_history(self) -> str:
        """"positives" or "all" (resolves "auto")."""
        if self.history != "auto":
            return self.history
        return "positives" if (self.label is not None or self.positive_behaviors) else "all"

    def used_columns(self) -> list[str]:
        cols = [self.user, self.item, self.timestamp]
        cols += [c for c in (self.label, self.category, self.behavior) if c is not None]
        return cols + list(self.categorical) + list(self.numeric)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in SCHEMA_KEYS:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "schema") -> "LogSchema":
        if not isinstance(d, dict):
            raise DataFormatError(f"{source}: expected a JSON object with column roles, got {type(d).__name__}")
        unknown = sorted(set(d) - set(SCHEMA_KEYS))
        if unknown:
            raise DataFormatError(f"{source}: unknown key(s) {unknown}; known: {list(SCHEMA_KEYS)}")
        missing = [k for k in ("user", "item", "timestamp") if k not in d]
        if missing:
            raise DataFormatError(f"{source}: missing required key(s) {missing} (the user, item and timestamp columns)")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise DataFormatError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: PathLike) -> "LogSchema":
        """Read a schema from a JSON file (keys as the attributes)."""
        import json

        p = _existing(path)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{p}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(p))


@dataclass(frozen=True)
class EventLog:
    """A schema-read log: one entry per row, sorted by (user, timestamp), ties in file order.

    Attributes:
        user: (N,) int64 dense user index (``user_keys[user]`` is the file's id).
        item: (N,) int64 dense item index ``0..n_items-1``.
        timestamp: (N,) int64 seconds.
        label: (N,) int8 0/1 click or None (a positives-only log).
        category: (N,) int64 category code or None.
        behavior: (N,) int8 behavior code (``behavior_names[code]``) or None.
        categorical: name -> (N,) int64 codes (0 = missing, values from 1).
        numeric: name -> (N,) float32 (NaN = missing).
        user_keys / item_keys: (U,) / (n_items,) int64 stable keys of the file's ids (the
            ids themselves when integers, a 64-bit BLAKE2 hash of the text otherwise): they do
            not change when rows are added, unlike the dense indices.
        item_values: (n_items,) the file's item ids (int64 or str).
        behavior_names: the behavior vocabulary (str), or ().
        schema: the :class:`LogSchema`; source: the file read.
    """

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    label: np.ndarray | None
    category: np.ndarray | None
    behavior: np.ndarray | None
    categorical: dict[str, np.ndarray]
    numeric: dict[str, np.ndarray]
    user_keys: np.ndarray
    item_keys: np.ndarray
    item_values: np.ndarray
    behavior_names: tuple[str, ...]
    schema: LogSchema
    source: str = ""

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_keys.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_keys.shape[0])


def _stable_keys(values: np.ndarray) -> np.ndarray:
    """int64 keys of distinct id values: the integers themselves, or BLAKE2b-64 of the text."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    import hashlib

    return np.array([int.from_bytes(hashlib.blake2b(str(v).encode("utf-8"), digest_size=8).digest(), "little",
                                    signed=True) for v in values], dtype=np.int64)


def _column_array(table: Any, name: str, p: Path) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise DataFormatError(f"{p}: column {name!r} has {col.null_count} empty value(s)")
    return col.to_numpy(zero_copy_only=False)


def _timestamps(table: Any, name: str, unit: str, p: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(name)
    if col.null_count:
        raise DataFormatError(f"{p}: column {name!r} has {col.null_count} empty value(s)")
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            ts = pc.cast(col, pa.timestamp("s"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataFormatError(f"{p}: column {name!r}: cannot read the text as ISO-8601 times ({str(e).splitlines()[0]})") from None
        return pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        raise DataFormatError(f"{p}: column {name!r}: expected integer, float or timestamp values, got {t}")
    x = col.to_numpy(zero_copy_only=False)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataFormatError(f"{p}: column {name!r} holds NaN or infinite times")
    div = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    return np.floor_divide(np.floor(x).astype(np.int64), div)


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(values, return_inverse=True)
    return uniq, inv.astype(np.int64)


def read_log(path: PathLike, schema: LogSchema | dict[str, Any] | PathLike) -> EventLog:
    """Read a Parquet (``.parquet``/``.pq``) or CSV (``.csv``/``.tsv``/``.txt``) behavior log by
    its :class:`LogSchema` (an instance, a dict, or a JSON file path).

    Returns an :class:`EventLog` sorted by (user, timestamp), ties in file order.

    Raises:
        FileNotFoundError for a missing file; DataFormatError naming the file for an unknown
        suffix, a missing column (listing those present), empty values in a required column,
        labels other than 0/1, or unreadable times.
    """
    import pyarrow as pa

    if not isinstance(schema, LogSchema):
        schema = schema if isinstance(schema, dict) else LogSchema.load(schema)
        schema = schema if isinstance(schema, LogSchema) else LogSchema.from_dict(schema)
    p = _existing(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            try:
                present = pq.read_schema(p).names
            except (pa.ArrowInvalid, OSError) as e:
                raise DataFormatError(f"{p}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
            missing = [c for c in schema.used_columns() if c not in present]
            if missing:
                raise DataFormatError(f"{p}: column(s) {missing} named by the schema are absent; the file has {present}")
            table = pq.read_table(p, columns=schema.used_columns())
        elif suffix in (".csv", ".tsv", ".txt"):
            import pyarrow.csv as pacsv

            delim = "\t" if suffix == ".tsv" and schema.delimiter == "," else schema.delimiter
            ro = pacsv.ReadOptions(column_names=list(schema.columns) if schema.columns else None, block_size=1 << 24)
            try:
                table = pacsv.read_csv(p, read_options=ro, parse_options=pacsv.ParseOptions(delimiter=delim))
            except pa.ArrowInvalid as e:
                raise _arrow_error(p, e) from None
            missing = [c for c in schema.used_columns() if c not in table.column_names]
            if missing:
                raise DataFormatError(f"{p}: column(s) {missing} named by the schema are absent; the file has "
                                      f"{table.column_names}" + ("" if schema.columns else
                                                                 " (a headerless CSV needs \"columns\" in the schema)"))
        else:
            raise DataFormatError(f"{p}: unknown log suffix {suffix!r}; expected .parquet, .pq, .csv, .tsv or .txt")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataFormatError(f"{p}: {str(e).splitlines()[0]}") from None
    n = table.num_rows
    if n == 0:
        raise DataFormatError(f"{p}: no rows")
    user_raw = _column_array(table, schema.user, p)
    item_raw = _column_array(table, schema.item, p)
    ts = _timestamps(table, schema.timestamp, schema.time_unit, p)
    user_vals, user = _codes(user_raw)
    item_vals, item = _codes(item_raw)
    label = None
    if schema.label is not None:
        lab = _column_array(table, schema.label, p)
        if schema.label_threshold is not None:
            if lab.dtype.kind not in "iuf":
                raise DataFormatError(f"{p}: column {schema.label!r}: label_threshold needs numeric values")
            label = (lab >= schema.label_threshold).astype(np.int8)
        else:
            if lab.dtype.kind == "b":
                label = lab.astype(np.int8)
            elif lab.dtype.kind in "iuf" and np.isin(lab, (0, 1)).all():
                label = lab.astype(np.int8)
            else:
                raise DataFormatError(f"{p}: column {schema.label!r}: labels must be 0/1 or true/false "
                                      "(give label_threshold for ratings)")
    category = None
    if schema.category is not None:
        _, category = _codes(_column_array(table, schema.category, p))
    behavior, bnames = None, ()
    if schema.behavior is not None:
        bvals, bcodes = _codes(_column_array(table, schema.behavior, p))
        if bvals.shape[0] > 127:
            raise DataFormatError(f"{p}: column {schema.behavior!r} has {bvals.shape[0]} distinct behaviors (at most 127)")
        behavior, bnames = bcodes.astype(np.int8), tuple(str(b) for b in bvals)
        if schema.positive_behaviors:
            unknown = [b for b in schema.positive_behaviors if b not in bnames]
            if unknown:
                raise DataFormatError(f"{p}: positive_behaviors {unknown} never occur in {schema.behavior!r} "
                                      f"(values: {list(bnames)[:10]})")
            label = np.isin(np.asarray(bnames, dtype=object)[bcodes], schema.positive_behaviors).astype(np.int8)
    cats: dict[str, np.ndarray] = {}
    for name in schema.categorical:
        col = table.column(name)
        vals = col.to_numpy(zero_copy_only=False)
        valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        codes = np.zeros(n, np.int64)
        if valid.any():
            _, c = _codes(vals[valid])
            codes[valid] = c + 1
        cats[name] = codes
    nums: dict[str, np.ndarray] = {}
    for name in schema.numeric:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise DataFormatError(f"{p}: numeric feature {name!r} has type {col.type}, expected numbers")
        nums[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)
    order = np.lexsort((np.arange(n), ts, user))
    pick = lambda a: None if a is None else np.ascontiguousarray(a[order])  # noqa: E731
    return EventLog(
        user=pick(user), item=pick(item), timestamp=pick(ts), label=pick(label), category=pick(category),
        behavior=pick(behavior), categorical={k: pick(v) for k, v in cats.items()},
        numeric={k: pick(v) for k, v in nums.items()}, user_keys=_stable_keys(user_vals),
        item_keys=_stable_keys(item_vals), item_values=item_vals, behavior_names=bnames, schema=schema, source=str(p),
    )
