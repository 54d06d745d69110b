"""query_sql: the demo SQLite database, the statement policy, and a real MariaDB server (the
MySQL protocol) started on loopback by a fixture. Under CI=true the MariaDB tests must run:
a missing server is a failure there, not a skip (``scripts/install_test_services.sh`` installs it).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from toolkit import ToolError, ToolkitConfig, default_toolbox
from toolkit.tools.sql import QuerySQLTool, SQLPolicyError, build_demo_database, check_statement, split_statements

DB_DIR = Path(ToolkitConfig().data_dir) / "db"


# ------------------------------------------------------------------------------------------------
# Policy
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sql, statements", [
    ("SELECT 1", ["SELECT 1"]),
    ("SELECT 1;", ["SELECT 1"]),
    ("SELECT ';' AS x; SELECT 2", ["SELECT ';' AS x", "SELECT 2"]),
    ("SELECT 1 -- ; DROP TABLE films\n", ["SELECT 1"]),
    ("SELECT /* ; */ 1", ["SELECT   1"]),
    ("SELECT 'it''s; fine'", ["SELECT 'it''s; fine'"]),
])
def test_split_statements(sql, statements):
    assert split_statements(sql) == statements


def test_hash_is_a_comment_only_in_mysql():
    """`#` starts a comment in MySQL/MariaDB only: SQLite refuses it (it used to drop the rest of the
    line silently, running another query than the one written); elsewhere it is a plain character."""
    sql = "SELECT \"a;b\" # trailing ; comment"
    assert split_statements(sql, "mysql") == ['SELECT "a;b"']
    assert split_statements(sql, "mariadb") == ['SELECT "a;b"']
    with pytest.raises(SQLPolicyError, match="'#' starts a comment only in MySQL/MariaDB"):
        split_statements(sql, "sqlite")
    assert split_statements("SELECT 5 # 3", "postgresql") == ["SELECT 5 # 3"]
    assert split_statements("SELECT 1 # ; DROP TABLE films") == ["SELECT 1 #", "DROP TABLE films"]
    assert split_statements("SELECT '#' AS h", "sqlite") == ["SELECT '#' AS h"]  # inside quotes: text


@pytest.mark.parametrize("sql, fragment", [
    ("DELETE FROM films", "read-only and refuses DELETE"),
    ("  update films set year = 1", "refuses UPDATE"),
    ("SELECT 1; DROP TABLE films", "one statement per call; got 2"),
    ("SELECT * FROM films INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
    ("/*!50000 DROP TABLE films */", "executable comments"),
    ("-- only a comment", "no SQL statement"),
    ("PRAGMA writable_schema = 1", "refuses PRAGMA"),
])
def test_policy_refusals(sql, fragment):
    with pytest.raises(SQLPolicyError, match=fragment):
        check_statement(sql, allow_write=False)


def test_writes_pass_the_policy_when_enabled():
    assert check_statement("INSERT INTO t VALUES (1);", allow_write=True) == "INSERT INTO t VALUES (1)"


# ------------------------------------------------------------------------------------------------
# The demo SQLite database
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return default_toolbox(sql_max_rows=5)["query_sql"]


def test_demo_database_answers_and_agrees_with_the_csv(demo):
    out = demo(sql="SELECT director FROM films WHERE title = 'Killers of the Flower Moon'")
    assert out == "director\nMartin Scorsese\n(1 row)"
    out = demo(sql="SELECT f.title, d.birth_year FROM films f JOIN directors d ON d.name = f.director "
                   "WHERE f.title = 'Oppenheimer'")
    assert out == "title | birth_year\nOppenheimer | 1970\n(1 row)"
    with open(DB_DIR / "films.csv", newline="") as f:
        scorsese = sum(1 for r in csv.DictReader(f) if r["director"] == "Martin Scorsese")
    assert demo(sql="SELECT COUNT(*) AS n FROM films WHERE director = 'Martin Scorsese'") == f"n\n{scorsese}\n(1 row)"
    assert "Tables: directors(name, birth_year, birthplace), films(title, year, director" in demo.description


def test_demo_row_limit_and_errors(demo):
    out = demo(sql="SELECT title FROM films ORDER BY year, title")
    lines = out.splitlines()
    assert lines[0] == "title" and len(lines) == 7 and lines[-1] == "(first 5 rows shown; the query returned more)"
    assert demo(sql="SELECT NULL AS x") == "x\nNULL\n(1 row)"
    with pytest.raises(ToolError, match="the database refused the statement: no such table: actors"):
        demo(sql="SELECT * FROM actors")
    with pytest.raises(ToolError, match="read-only and refuses DROP"):
        demo(sql="DROP TABLE films")


def test_demo_read_only_holds_below_the_policy(demo):
    """A write that got past the statement check still fails: the file is opened read-only."""
    with pytest.raises(RuntimeError, match="readonly database"):
        demo.execute("DELETE FROM films", read_only=True)
    assert demo(sql="SELECT COUNT(*) FROM films").splitlines()[1] != "0"


def test_sqlite_hash_comment_is_refused_not_dropped(demo):
    with pytest.raises(ToolError, match="'#' starts a comment only in MySQL/MariaDB"):
        demo(sql="SELECT title FROM films # WHERE year = 2023")
    assert demo(sql="SELECT '#' AS h") == "h\n#\n(1 row)"


def test_sqlite_statement_time_limit(tmp_path):
    """A recursive CTE that never ends is stopped at the time limit (it ran past 20 s before), and the
    same pooled connection then answers the next statement."""
    q = QuerySQLTool(demo_dir=DB_DIR, timeout_s=1)
    q.setup()
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    with pytest.raises(ToolError, match="ran past the 1 s limit and was stopped"):
        q(sql=endless)
    assert q(sql="SELECT COUNT(*) > 0 AS n FROM films") == "n\n1\n(1 row)"


@pytest.mark.parametrize("sql", ["SELECT zeroblob(900000000)", "SELECT length(zeroblob(900000000))",
                                 "SELECT length(replace(hex(zeroblob(20000000)), '00', 'xy'))"])
def test_sqlite_value_size_limit(demo, sql):
    with pytest.raises(ToolError, match="the database refused the statement: string or blob too big"):
        demo(sql=sql)
    assert demo(sql="SELECT length(zeroblob(1000)) AS n") == "n\n1000\n(1 row)"


def test_demo_database_is_built_once_per_content(tmp_path):
    a = build_demo_database(DB_DIR, cache_dir=tmp_path)
    b = build_demo_database(DB_DIR, cache_dir=tmp_path)
    assert a == b and [p.name for p in tmp_path.iterdir()] == [a.name]


def test_sqlite_url_with_writes_enabled(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    box = default_toolbox(sql_url=url, sql_write=True)
    q = box["query_sql"]
    assert q(sql="CREATE TABLE notes (id INTEGER, body TEXT)") == "OK"
    assert q(sql="INSERT INTO notes VALUES (1, 'a'), (2, 'b')") == "OK, 2 rows affected"
    ro = default_toolbox(sql_url=url)["query_sql"]
    assert ro(sql="SELECT body FROM notes ORDER BY id") == "body\na\nb\n(2 rows)"
    with pytest.raises(RuntimeError, match="readonly|read-only|query_only|attempt to write"):
        ro.execute("DELETE FROM notes", read_only=True)


def test_held_values_are_the_names_in_the_demo_database(demo):
    """What the planner's tool prior leans towards query_sql for (pipeline.formats.toolprior.task_holdings):
    the titles and names, each row's own; not a country many rows repeat, not a number."""
    held = demo.held_values()
    assert {"Martin Scorsese", "Inception", "Dune: Part Two", "Schindler's List"} <= held
    assert not {"United States", "Japan", "1942"} & held
    assert all(not v.isdigit() for v in held)


def test_held_values_of_a_url_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    q = default_toolbox(sql_url=url, sql_write=True)["query_sql"]
    q(sql="CREATE TABLE people (name TEXT, city TEXT, code TEXT)")
    q(sql="INSERT INTO people VALUES ('Ada Lovelace', 'London', 'x'), ('Alan Turing', 'London', '12345'), "
          "('Grace Hopper', 'New York', '  Mixed   spaces  ')")
    q(sql="CREATE TABLE shows (title TEXT)")
    q(sql="INSERT INTO shows VALUES ('Only In A Small Table'), ('Another One')")
    held = default_toolbox(sql_url=url)["query_sql"].held_values(max_rows=3)
    # each row's own name, whitespace folded; not "London" (repeated), "x" (short), "12345" (no letter)
    assert held == {"Ada Lovelace", "Alan Turing", "Grace Hopper", "Mixed spaces",
                    "Only In A Small Table", "Another One"}
    # a table of more rows than max_rows is not read
    assert default_toolbox(sql_url=url)["query_sql"].held_values(max_rows=2) == {"Only In A Small Table", "Another One"}
    # a database that cannot be read holds nothing (its first call says why)
    assert default_toolbox(sql_url=f"sqlite:///{tmp_path / 'no' / 'such.db'}")["query_sql"].held_values() == frozenset()


# ------------------------------------------------------------------------------------------------
# MariaDB
# ------------------------------------------------------------------------------------------------

def _find(binary: str) -> str | None:
    return shutil.which(binary) or next((p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    """A throwaway MariaDB on 127.0.0.1 with database ``demo`` (the films table), a read-only
    user ``reader`` and a read-write user ``writer``. Yields ``{"host", "port"}``."""
    mariadbd, install_db = _find("mariadbd"), _find("mariadb-install-db")
    if not (mariadbd and install_db):
        msg = "MariaDB is not installed: run `bash scripts/install_test_services.sh`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: this test must run)")
        pytest.skip(msg)
    import pymysql

    d = tmp_path_factory.mktemp("mariadb")
    fast = ["--innodb-log-file-size=8M", "--innodb-flush-method=nosync", "--innodb-doublewrite=0",
            "--innodb-flush-log-at-trx-commit=0"]
    subprocess.run([install_db, "--no-defaults", "--user=root", f"--datadir={d}/data",
                    "--auth-root-authentication-method=normal", "--skip-test-db", *fast],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = f"{d}/sock"
    proc = subprocess.Popen([mariadbd, "--no-defaults", "--user=root", f"--datadir={d}/data", f"--socket={sock}",
                             f"--port={port}", "--bind-address=127.0.0.1", f"--pid-file={d}/pid",
                             f"--log-error={d}/err.log", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
                             "--skip-name-resolve", *fast],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(300):
            try:
                root = pymysql.connect(unix_socket=sock, user="root", autocommit=True)
                break
            except pymysql.err.OperationalError:
                if proc.poll() is not None:
                    raise RuntimeError(f"mariadbd exited: {Path(d, 'err.log').read_text()[-2000:]}")
                time.sleep(0.05)
        else:
            raise RuntimeError(f"mariadbd did not accept connections: {Path(d, 'err.log').read_text()[-2000:]}")
        with root.cursor() as c:
            c.execute("CREATE DATABASE demo")
            c.execute("CREATE TABLE demo.films (title VARCHAR(200), year INT, director VARCHAR(100), "
                      "country VARCHAR(100), won_best_picture INT)")
            with open(DB_DIR / "films.csv", newline="") as f:
                rows = [(r["title"], int(r["year"]), r["director"], r["country"], int(r["won_best_picture"]))
                        for r in csv.DictReader(f)]
            c.executemany("INSERT INTO demo.films VALUES (%s, %s, %s, %s, %s)", rows)
            c.execute("CREATE USER 'reader'@'%' IDENTIFIED BY 'rpw'")
            c.execute("GRANT SELECT ON demo.* TO 'reader'@'%'")
            c.execute("CREATE USER 'writer'@'%' IDENTIFIED BY 'wpw'")
            c.execute("GRANT ALL ON demo.* TO 'writer'@'%'")
        root.close()
        yield {"host": "127.0.0.1", "port": port}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _url(db, user, pw):
    return f"mysql+pymysql://{user}:{pw}@{db['host']}:{db['port']}/demo"


def test_mariadb_select_through_the_mysql_protocol(mariadb):
    q = default_toolbox(sql_url=_url(mariadb, "reader", "rpw"), sql_max_rows=3)["query_sql"]
    assert q(sql="SELECT title, year FROM films WHERE director = 'Christopher Nolan' AND year >= 2017 ORDER BY year") == \
        "title | year\nDunkirk | 2017\nTenet | 2020\nOppenheimer | 2023\n(3 rows)"
    assert q(sql="SELECT title FROM films").splitlines()[-1] == "(first 3 rows shown; the query returned more)"
    assert "mysql+pymysql database" in q.description
    with pytest.raises(ToolError, match="Table 'demo.actors' doesn't exist"):
        q(sql="SELECT * FROM actors")
    with pytest.raises(ToolError, match="one statement per call"):
        q(sql="SELECT 1; SELECT 2")


def test_mariadb_held_values(mariadb):
    held = default_toolbox(sql_url=_url(mariadb, "reader", "rpw"))["query_sql"].held_values()
    # the fixture's films table: its titles; a director or a country repeats
    assert {"Taxi Driver", "Oppenheimer"} <= held and not {"Martin Scorsese", "United States"} & held


def test_mariadb_read_only_transaction_holds_even_for_a_user_who_may_write(mariadb):
    q = default_toolbox(sql_url=_url(mariadb, "writer", "wpw"))["query_sql"]
    with pytest.raises(ToolError, match="read-only and refuses INSERT"):
        q(sql="INSERT INTO films VALUES ('X', 2000, 'Y', 'Z', 0)")
    # past the policy check, the session's read-only transaction refuses the write (error 1792)
    with pytest.raises(RuntimeError, match="READ ONLY transaction"):
        q.execute("INSERT INTO films VALUES ('X', 2000, 'Y', 'Z', 0)", read_only=True)
    assert q(sql="SELECT COUNT(*) AS n FROM films WHERE title = 'X'") == "n\n0\n(1 row)"


def test_mariadb_select_grant_refuses_writes_even_when_enabled(mariadb):
    q = QuerySQLTool(url=_url(mariadb, "reader", "rpw"), allow_write=True)
    with pytest.raises(ToolError, match=r"\(1142, \"INSERT command denied to user 'reader'"):
        q(sql="INSERT INTO films VALUES ('X', 2000, 'Y', 'Z', 0)")


def test_mariadb_writes_when_enabled(mariadb):
    q = default_toolbox(sql_url=_url(mariadb, "writer", "wpw"), sql_write=True)["query_sql"]
    assert q(sql="CREATE TABLE notes (id INT, body TEXT)") == "OK, 0 rows affected"
    assert q(sql="INSERT INTO notes VALUES (1, 'x'), (2, 'y')") == "OK, 2 rows affected"
    assert q(sql="SELECT body FROM notes ORDER BY id") == "body\nx\ny\n(2 rows)"
