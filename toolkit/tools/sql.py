"""``query_sql(sql)``: one SQL statement through SQLAlchemy, read-only unless enabled.

The default database is the demo SQLite file built from ``data/db/*.csv`` (``films``,
``directors``); ``sql_url`` points it anywhere SQLAlchemy reaches, e.g. MySQL or MariaDB with
``mysql+pymysql://user:password@127.0.0.1:3306/db``.

Read-only holds in three layers: only reading statements (SELECT, WITH, SHOW, DESCRIBE,
EXPLAIN, VALUES) pass the check; the statement runs in a read-only transaction (SQLite:
``query_only`` on a file opened read-only; MySQL/MariaDB: ``SET SESSION TRANSACTION READ
ONLY``; PostgreSQL: ``SET TRANSACTION READ ONLY``) that is rolled back; and a database user
with only SELECT grants is the recommended third. One statement per call; at most ``max_rows``
rows come back, as a compact ``a | b`` table.

Limits, on every database: a statement runs at most ``timeout_s`` seconds (MariaDB
``max_statement_time``, MySQL ``max_execution_time``, PostgreSQL ``statement_timeout``, SQLite a
progress handler that interrupts it), and a value (text or blob) or row built by a SQLite
statement is at most ``max_value_bytes`` (SQLite's ``SQLITE_LIMIT_LENGTH``; MariaDB's own is
``max_allowed_packet``). ``#`` starts a comment only in MySQL/MariaDB; in SQLite it is refused
with a message, elsewhere it is an ordinary character, so a comment never silently changes the
statement that runs.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sqlite3
import threading
from pathlib import Path

from toolkit.tool import Tool

READ_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE")
CELL_CHARS = 200
STATEMENT_TIMEOUT_S = 10
MAX_VALUE_BYTES = 16 * 1024 * 1024  # largest SQLite text/blob/row a statement may build (zeroblob(9e8) is refused)
HELD_MAX_ROWS = 100_000  # held_values() skips larger tables
SQLITE_PROGRESS_OPS = 10_000  # SQLite VM instructions between deadline checks (~1 ms of work)


class SQLPolicyError(PermissionError):
    """The statement breaks the tool's policy (several statements, a write while read-only)."""


def split_statements(sql: str, dialect: str | None = None) -> list[str]:
    """The statements of ``sql``, split at ``;`` outside quotes and comments, comments removed,
    empty ones dropped. ``#`` starts a comment only when ``dialect`` is ``mysql`` or ``mariadb``;
    in ``sqlite`` (where it is no comment) it is a :class:`SQLPolicyError`; otherwise (PostgreSQL's
    XOR operator, or a dialect not known yet) it is an ordinary character."""
    hash_comments = dialect in ("mysql", "mariadb")
    out, buf, i, n = [], [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and ch != "`":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            buf.append(sql[i:j + 1])
            i = j + 1
        elif ch == "#" and dialect == "sqlite":
            raise SQLPolicyError("'#' starts a comment only in MySQL/MariaDB; this database is SQLite: "
                                 "use -- or /* */ for comments")
        elif sql.startswith("--", i) or (ch == "#" and hash_comments):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            buf.append(" ")
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise SQLPolicyError("unterminated /* comment")
            if sql.startswith("/*!", i):  # MySQL executable comment: its content runs
                raise SQLPolicyError("MySQL executable comments /*! ... */ are not allowed")
            i = j + 2
            buf.append(" ")
        elif ch == ";":
            out.append("".join(buf))
            buf = []
            i += 1
        else:
            buf.append(ch)
            i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def check_statement(sql: str, allow_write: bool, dialect: str | None = None) -> str:
    """The one statement in ``sql`` (comments removed), or :class:`SQLPolicyError`. ``dialect``
    (SQLAlchemy's name: ``sqlite``, ``mysql``, ``mariadb``, ``postgresql``) decides what ``#`` is."""
    statements = split_statements(sql, dialect)
    if not statements:
        raise SQLPolicyError("no SQL statement given")
    if len(statements) > 1:
        raise SQLPolicyError(f"one statement per call; got {len(statements)}. Run them one at a time")
    stmt = statements[0]
    keyword = re.match(r"\(*\s*(\w+)", stmt)
    first = keyword.group(1).upper() if keyword else ""
    if not allow_write and first not in READ_KEYWORDS:
        raise SQLPolicyError(f"query_sql is read-only and refuses {first or 'this'} statements; "
                             f"allowed: {', '.join(READ_KEYWORDS)}. Enable writes with "
                             "sql_write=True (REWOO_SQL_WRITE=1)")
    if not allow_write and re.search(r"\bINTO\s+(OUTFILE|DUMPFILE)\b", stmt, re.IGNORECASE):
        raise SQLPolicyError("SELECT ... INTO OUTFILE/DUMPFILE writes files; refused")
    return stmt


# --------------------------------------------------------------------------------------------
# The demo database
# --------------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rewoo-stack"


def _read_csvs(folder: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    tables = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            raise ValueError(f"{path} is empty; a table CSV starts with a header row")
        tables[path.stem] = (rows[0], rows[1:])
    if not tables:
        raise FileNotFoundError(f"no *.csv tables in {folder}")
    return tables


def demo_schema(folder: Path) -> str:
    """``films(title, year, ...), directors(...)``, from the CSV headers."""
    return ", ".join(f"{t}({', '.join(h)})" for t, (h, _) in _read_csvs(folder).items())


_build_lock = threading.Lock()


def build_demo_database(folder: str | Path, cache_dir: Path | None = None) -> Path:
    """The SQLite file for the CSVs in ``folder`` (built once per content, atomically)."""
    folder = Path(folder)
    tables = _read_csvs(folder)
    digest = hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()[:16]
    target = (cache_dir or _cache_dir()) / f"demo-{digest}.sqlite"
    with _build_lock:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        db = sqlite3.connect(tmp)
        try:
            for name, (header, rows) in tables.items():
                types = []
                for col in range(len(header)):
                    values = [r[col] for r in rows if r[col] != ""]
                    types.append("INTEGER" if values and all(re.fullmatch(r"-?\d+", v) for v in values) else "TEXT")
                cols = ", ".join(f'"{h}" {t}' for h, t in zip(header, types))
                db.execute(f'CREATE TABLE "{name}" ({cols})')
                conv = [int if t == "INTEGER" else str for t in types]
                db.executemany(f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(header))})',
                               [[None if v == "" else c(v) for c, v in zip(conv, r)] for r in rows])
            db.commit()
        finally:
            db.close()
        os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------------------------
# The tool
# --------------------------------------------------------------------------------------------

def format_table(columns: list[str], rows: list[tuple], truncated: bool) -> str:
    def cell(v) -> str:
        if v is None:
            return "NULL"
        text = " ".join(str(v).split())
        return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "..."

    lines = [" | ".join(columns)] + [" | ".join(cell(v) for v in r) for r in rows]
    if truncated:
        lines.append(f"(first {len(rows)} rows shown; the query returned more)")
    else:
        lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


class QuerySQLTool(Tool):
    name = "query_sql"
    description = "Run one SQL query on the database and return the rows as a table."
    inputs = {"sql": {"type": "string", "description": "one SQL statement, e.g. SELECT title FROM films WHERE year = 2023"}}
    output_type = "string"

    def __init__(self, url: str | None = None, demo_dir: str | Path | None = None, allow_write: bool = False,
                 max_rows: int = 50, timeout_s: int = STATEMENT_TIMEOUT_S, max_value_bytes: int = MAX_VALUE_BYTES):
        super().__init__()
        if not url and not demo_dir:
            raise ValueError("query_sql needs a database URL or the demo CSV folder")
        self.url = url
        self.demo_dir = Path(demo_dir) if demo_dir else None
        self.allow_write = allow_write
        self.max_rows = max_rows
        self.timeout_s = timeout_s
        self.max_value_bytes = max_value_bytes
        self.engine = None
        self._held: frozenset[str] | None = None
        mode = "read and write" if allow_write else "read-only"
        if url:
            self.description = (f"Run one SQL statement ({mode}) on the {url.split(':', 1)[0]} database "
                                "and return the rows as a table.")
        else:
            self.description = f"Run one SQL statement ({mode}, SQLite) on the film database."
            try:
                self.description += f" Tables: {demo_schema(self.demo_dir)}."
            except (OSError, ValueError):
                pass  # the description stays generic; setup() raises the same error on the first call

    def setup(self) -> None:
        from sqlalchemy import create_engine

        if self.url:
            kwargs = {"connect_args": {"check_same_thread": False}} if self.url.startswith("sqlite") else {}
            self.engine = create_engine(self.url, pool_pre_ping=True, **kwargs)
        else:
            path = build_demo_database(self.demo_dir)
            mode = "rw" if self.allow_write else "ro"
            self.engine = create_engine(f"sqlite:///file:{path}?mode={mode}&uri=true",
                                        connect_args={"check_same_thread": False})

    def held_values(self, max_rows: int = HELD_MAX_ROWS) -> frozenset[str]:
        """The names the database holds: the text values of its key-like columns (every row's
        value its own, at least two rows: ``films.title``, ``directors.name``; not a repeated
        ``country``), 3 to 80 characters with a letter, from tables of at most ``max_rows`` rows.
        The planner's tool prior leans a step about one of them towards this tool
        (:func:`pipeline.formats.toolprior.task_holdings`). Read once; empty where the database
        cannot be read (the first call then says why)."""
        if self._held is None:
            try:
                self._held = frozenset(self._read_held_values(max_rows))
            except Exception:  # noqa: BLE001 - a hint for the planner; the tool's own calls report the error
                self._held = frozenset()
        return self._held

    def _read_held_values(self, max_rows: int) -> set[str]:
        from sqlalchemy import String, func, inspect, select, table, column

        self._ensure_setup()
        held: set[str] = set()
        inspector = inspect(self.engine)
        with self.engine.connect() as conn:
            for name in inspector.get_table_names():
                texts = [c["name"] for c in inspector.get_columns(name) if isinstance(c["type"], String)]
                if not texts:
                    continue
                t = table(name, *(column(c) for c in texts))
                if conn.execute(select(func.count()).select_from(t)).scalar_one() > max_rows:
                    continue
                for c in texts:
                    col = t.c[c]
                    n, distinct = conn.execute(select(func.count(col), func.count(col.distinct()))).one()
                    if n < 2 or n != distinct:
                        continue
                    held.update(v for (v,) in conn.execute(select(col).where(col.is_not(None)))
                                if isinstance(v, str) and 3 <= len(v.strip()) <= 80 and re.search(r"[A-Za-z]", v))
        return {" ".join(v.split()) for v in held}

    def forward(self, sql: str) -> str:
        self._ensure_setup()
        stmt = check_statement(sql, self.allow_write, self._dialect())
        return self.execute(stmt, read_only=not self.allow_write)

    def execute(self, stmt: str, read_only: bool) -> str:
        """Run one checked statement. ``read_only`` puts it in a read-only transaction that is
        rolled back."""
        from sqlalchemy import exc, text

        self._ensure_setup()
        dialect = self.engine.dialect.name
        try:
            with self.engine.connect() as conn:
                if dialect == "sqlite":
                    self._sqlite_limits(conn)
                try:
                    if read_only:
                        self._enter_read_only(conn, dialect)
                    result = conn.exec_driver_sql(stmt)
                    if result.returns_rows:
                        columns = list(result.keys())
                        rows = [tuple(r) for r in result.fetchmany(self.max_rows + 1)]
                        truncated = len(rows) > self.max_rows
                        out = format_table(columns, rows[: self.max_rows], truncated)
                    else:
                        n = result.rowcount  # -1 where the driver does not count (SQLite DDL)
                        out = "OK" if n < 0 else f"OK, {n} row{'s' if n != 1 else ''} affected"
                    if read_only:
                        conn.rollback()
                    else:
                        conn.commit()
                    if dialect == "sqlite" and read_only:
                        conn.exec_driver_sql("PRAGMA query_only = OFF")
                    return out
                finally:
                    if dialect == "sqlite":  # the pool's rollback must not meet a passed deadline
                        conn.connection.driver_connection.set_progress_handler(None, 0)
        except exc.OperationalError as e:
            if dialect == "sqlite" and "interrupted" in str(e.orig):
                raise RuntimeError(f"the statement ran past the {self.timeout_s} s limit and was stopped") from e
            raise RuntimeError(f"the database refused the statement: {' '.join(str(e.orig).split())}") from e
        except exc.DBAPIError as e:
            raise RuntimeError(f"the database refused the statement: {' '.join(str(e.orig).split())}") from e
        except exc.SQLAlchemyError as e:
            raise RuntimeError(f"database error: {' '.join(str(e).split())[:300]}") from e

    def _dialect(self) -> str:
        name = self.engine.dialect.name
        return "mariadb" if getattr(self.engine.dialect, "is_mariadb", False) else name

    def _sqlite_limits(self, conn) -> None:
        """The statement time and value-size limits on this pooled SQLite connection (set each time:
        a handler left from a call that timed out would stop the next one at once)."""
        import time  # noqa: PLC0415

        raw = conn.connection.driver_connection
        raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_value_bytes)
        deadline = time.monotonic() + self.timeout_s
        raw.set_progress_handler(lambda: time.monotonic() > deadline, SQLITE_PROGRESS_OPS)

    def _enter_read_only(self, conn, dialect: str) -> None:
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        elif dialect in ("mysql", "mariadb"):
            if getattr(conn.dialect, "is_mariadb", False):
                conn.exec_driver_sql(f"SET SESSION max_statement_time = {int(self.timeout_s)}")
            else:
                conn.exec_driver_sql(f"SET SESSION max_execution_time = {int(self.timeout_s * 1000)}")
            conn.rollback()
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
        elif dialect == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(self.timeout_s * 1000)}")
        else:
            raise RuntimeError(f"query_sql cannot make a {dialect} session read-only; "
                               "use a database user with SELECT grants only and sql_write=True")
