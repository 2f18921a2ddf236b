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
