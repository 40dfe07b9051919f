"""The hot path's statements, compiled by SQLAlchemy once and run on the driver's cursor.

Issue 14's profiles of a single call put SQLAlchemy's execution path (the execution context,
parameter construction, result processing set up per call) at several times the cost of the
statement itself: a one-token lookup spent about 300 µs in SQLAlchemy around a 30 µs
`sqlite3` execute. A `Prepared` statement keeps what SQLAlchemy makes of a statement (its SQL
for this dialect, its parameters' order, the type conversions of its binds and columns) and
runs it on the DBAPI cursor of a connection SQLAlchemy manages, in that connection's
transaction. Everything else stays with SQLAlchemy.

What is kept from SQLAlchemy: the SQL text (bound parameters only, never a literal value), each
bind's and column's type processing (`UtcDateTime`, SQLite's booleans and blobs), and the driver
errors, which the caller handles as it handles SQLAlchemy's (a connection in doubt is
invalidated). The statement must not need anything SQLAlchemy does per execution beyond that
(no defaults computed in Python, no `RETURNING` of server defaults it would convert
differently): the statements below are checked against SQLAlchemy's own execution in
tests/contract/test_prepared.py.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.visitors import iterate

__all__ = ["Prepared", "PreparedIn", "prepared"]

_Processor = Callable[[Any], Any]


def _binds_of(statement: Any) -> list[Any]:
    return [e for e in iterate(statement) if getattr(e, "__visit_name__", "") == "bindparam"]


class Prepared:
    """One statement, compiled once for `dialect`. `params` are by name, as SQLAlchemy's."""

    def __init__(
        self,
        statement: Any,
        dialect: Dialect,
        *,
        expanded: Mapping[str, int] | None = None,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        expanded = expanded or {}
        self._dialect = dialect
        if expanded:  # IN lists of a fixed length: rendered as that many bound parameters
            # (Placeholders for every other bind too: render_postcompile wants values.)
            placeholders: dict[str, Any] = {b.key: None for b in _binds_of(statement)}
            placeholders.update({k: [None] * n for k, n in expanded.items()})
            statement = statement.params(placeholders)
            compiled = statement.compile(
                dialect=dialect, compile_kwargs={"render_postcompile": True}
            )
        else:
            # An INSERT names exactly the columns it is given (`column_keys`), as SQLAlchemy
            # does per execution: the others keep their server defaults.
            compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = str(compiled)
        self._expanded = dict(expanded)
        # Positional drivers (sqlite3: qmark) take a tuple in this order (a name may repeat);
        # named ones (psycopg: pyformat) a dict.
        self._order: list[str] | None = (
            list(compiled.positiontup) if compiled.positiontup is not None else None
        )
        # Values SQLAlchemy bound itself (literals in the statement). A statement compiled with
        # its IN lists rendered holds none of its own: SQLAlchemy refuses to say, and the
        # tests compare its rows with SQLAlchemy's.
        self._literals: dict[str, Any] = (
            {} if expanded else {k: v for k, v in compiled.params.items() if v is not None}
        )
        binds: dict[str, _Processor] = {}
        for name, bind in compiled.binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                binds[name] = proc
        self._binds = binds
        self._columns: list[str] = []
        results: list[_Processor | None] = []
        selected = getattr(statement, "selected_columns", None)
        if selected is None and getattr(statement, "_returning", None):
            selected = statement._returning
        for column in selected or ():
            self._columns.append(column.key)
            results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
        self._results = results if any(results) else None
        # Rows read by attribute, like SQLAlchemy's.
        self.Row: Callable[..., Any] = (
            namedtuple("Row", self._columns, rename=True) if self._columns else tuple
        )

    def __repr__(self) -> str:
        return f"Prepared({self.sql[:40]!r}...)"

    def _args(self, params: Mapping[str, Any]) -> Any:
        values = {**self._literals, **params} if self._literals else dict(params)
        for name, n in self._expanded.items():
            items = list(values.pop(name))
            if len(items) != n:
                raise ValueError(f"{name}: {len(items)} items for a statement of {n}")
            for i, item in enumerate(items, 1):
                values[f"{name}_{i}"] = item
        binds = self._binds
        if self._order is not None:
            return tuple(
                values[name] if name not in binds else binds[name](values[name])
                for name in self._order
            )
        for name, proc in binds.items():
            if name in values:
                values[name] = proc(values[name])
        return values

    def _row(self, raw: Sequence[Any]) -> Any:
        if self._results is None:
            return self.Row(*raw)
        return self.Row(
            *(v if p is None else p(v) for p, v in zip(self._results, raw, strict=True))
        )

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row, in `conn`'s transaction (or autocommit)."""
        with self._cursor(conn) as cursor:
            cursor.execute(self.sql, self._args(params))
            return [self._row(r) for r in cursor.fetchall()]

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute once; the number of rows it changed."""
        with self._cursor(conn) as cursor:
            cursor.execute(self.sql, self._args(params))
            return int(cursor.rowcount)

    def run_many(self, conn: Connection, many: Iterable[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (the driver's executemany: pipelined on psycopg).
        (Multi-row INSERTs on SQLite were tried for the GIL's sake: one step instead of one
        per row cut a 100-token detokenize's context switches by a tenth, but SQLite spent
        more on the long statement than that saved: 15% more CPU per field in one thread.)"""
        with self._cursor(conn) as cursor:
            cursor.executemany(self.sql, [self._args(p) for p in many])

    @contextmanager
    def _cursor(self, conn: Connection) -> Iterator[Any]:
        """A cursor of the driver's connection. A driver error becomes SQLAlchemy's (the same
        class SQLAlchemy would raise, with its parameters hidden), so that `Database.write`
        retries, maps and rolls back exactly as for any other statement; a lost connection is
        invalidated, as SQLAlchemy does."""
        driver: Any = conn.connection.driver_connection
        dbapi = self._dialect.loaded_dbapi
        cursor = driver.cursor()
        try:
            yield cursor
        except dbapi.Error as exc:
            lost = self._dialect.is_disconnect(exc, driver, cursor)
            if lost:
                conn.invalidate()
            raise sa_exc.DBAPIError.instance(
                self.sql,
                None,
                exc,
                dbapi.Error,
                hide_parameters=True,
                connection_invalidated=lost,
                dialect=self._dialect,
            ) from None
        finally:
            with suppress(dbapi.Error):  # a lost connection's cursor: already reported
                cursor.close()


class PreparedIn:
    """A statement with one expanding `IN` list, prepared per list length on first use. At most
    `lengths` lengths are kept (the first ones asked for: in practice one token, and a client's
    batch size); `get` returns None for any other, which then goes through SQLAlchemy."""

    def __init__(self, statement: Any, dialect: Dialect, name: str, lengths: int) -> None:
        self._statement = statement
        self._dialect = dialect
        self._name = name
        self._lengths = lengths
        self._by_length: dict[int, Prepared] = {}

    def __repr__(self) -> str:
        return f"PreparedIn({self._name}, {sorted(self._by_length)})"

    def get(self, length: int) -> Prepared | None:
        found = self._by_length.get(length)
        if found is None and length > 0 and len(self._by_length) < self._lengths:
            # Two threads may both build it: the same statement, either one kept.
            found = Prepared(self._statement, self._dialect, expanded={self._name: length})
            self._by_length[length] = found
        return found


_cache: dict[tuple[str, str, int, tuple[str, ...]], tuple[Any, Prepared]] = {}


def prepared(dialect: Dialect, statement: Any, column_keys: Sequence[str] = ()) -> Prepared:
    """`statement` (a module-level constant) prepared for `dialect`, once per process."""
    key = (dialect.name, dialect.driver, id(statement), tuple(column_keys))
    found = _cache.get(key)
    if found is None:
        # The statement is kept with it: its id is never reused while the entry exists.
        found = (statement, Prepared(statement, dialect, column_keys=column_keys or None))
        _cache[key] = found
    return found[1]
