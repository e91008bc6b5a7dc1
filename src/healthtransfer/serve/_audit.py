"""The audit log: one row per prediction, in SQLite (WAL) or any SQLAlchemy database.

Row: time (UTC ISO 8601), request id, key id, model version, HMAC-SHA256 of the canonical JSON
of the input record, and the output (JSON: probability, class, flags). No input values.

The input hash is keyed with a per-service secret kept in a separate file (mode 0600), never
in the database: a plain hash of a record is easy to reverse by enumerating the few trillion
plausible records of a small schema, and the stored probability confirms a guess. With the
key, whoever holds only the database cannot test guesses; the service can still match a
record it is shown again.

Writes are transactional; a batch's rows are committed together (one ``executemany``) before
the response is sent.

Durability (SQLite): the database runs in WAL mode with ``synchronous=NORMAL`` by default
(``audit_sync="normal"``). A committed row survives a crash or kill of the service process
(the WAL is written before the commit returns), but not an operating-system crash or a power
loss, which can lose the last commits before the WAL is checkpointed to disk. The database is
never corrupted either way. ``audit_sync="full"`` (``synchronous=FULL``) makes every commit
wait for the disk (about 10 ms each on an ordinary SSD) and survives power loss too. If WAL
mode cannot be set (a read-only or in-memory database), ``FULL`` is used whatever the setting:
``NORMAL`` is only safe with WAL. Other databases keep their own durability settings. WAL
checkpoints run in a background thread, not inside a request's commit (:class:`_Checkpointer`).

If the database cannot be written (read-only file, full disk, server down) the write raises :class:`AuditUnavailable` and the service answers 503 without a prediction: the
service fails closed rather than predict without a record.

Example
-------
>>> import tempfile, pathlib
>>> url = audit_url(pathlib.Path(tempfile.mkdtemp()) / "audit.sqlite")
>>> log = AuditLog(url)
>>> log.append([{"request_id": "r1", "key_id": "k", "model_version": "m",
...              "input_hash": "0" * 64, "output": {"probability": 0.5}}])
>>> log.count()
1
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import hmac
import json
import os
import secrets
import threading
import weakref
from pathlib import Path

from ..errors import UserInputError

__all__ = ["AuditLog", "AuditUnavailable", "audit_url", "input_hasher", "load_secret",
           "export_csv", "AUDIT_SYNC"]

COLUMNS = ("id", "time", "request_id", "key_id", "model_version", "input_hash", "output")
#: ``audit_sync`` values -> SQLite ``PRAGMA synchronous`` level (used in WAL mode only)
AUDIT_SYNC = {"normal": "NORMAL", "full": "FULL"}
_INSERT_COLUMNS = COLUMNS[1:]
_OUTPUT_JSON = json.JSONEncoder(sort_keys=True).encode  # = json.dumps(output, sort_keys=True)
_CHECKPOINT_ROWS = 1000  # rows appended before the background thread checkpoints the WAL...
_CHECKPOINT_EVERY_S = 1.0  # ...or this often, whichever comes first
_WAL_BACKSTOP_PAGES = 20000  # SQLite's own (foreground) checkpoint, only if the thread lags


def check_audit_sync(value: str) -> str:
    """``value`` lower-cased if it is a known ``audit_sync`` setting, else a UserInputError."""
    v = str(value).strip().lower()
    if v not in AUDIT_SYNC:
        raise UserInputError(f"unknown audit_sync {value!r}", where="serve",
                             fix=f"use one of {', '.join(sorted(AUDIT_SYNC))} ('normal': durable "
                                 "against a service crash; 'full': against power loss too)")
    return v


class AuditUnavailable(RuntimeError):
    """The audit database cannot record a prediction."""


def audit_url(path_or_url: str | Path) -> str:
    """A SQLAlchemy URL: kept as is if it has a scheme, else a SQLite file path."""
    s = str(path_or_url)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def load_secret(path: str | Path) -> bytes:
    """The 32-byte audit HMAC key in ``path`` (hex), created with mode 0600 if missing.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "audit.secret"
    >>> load_secret(f) == load_secret(f) and len(load_secret(f)) == 32
    True
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read the audit secret ({type(exc).__name__})",
                             where=str(path), fix="restore it from backup; a new one makes old "
                                                  "hashes unmatchable") from None
    if len(key) < 16:
        raise UserInputError("the audit secret is shorter than 16 bytes", where=str(path),
                             fix="delete it to have a new one created")
    return key


def input_hasher(secret: bytes):
    """``record -> HMAC-SHA256(secret, canonical JSON of record)`` as 64 hex digits.

    >>> h = input_hasher(b"k" * 32)
    >>> h({"age": 63}) == h({"age": 63}) != input_hasher(b"j" * 32)({"age": 63})
    True
    """
    # one encoder for every call (json.dumps with options builds a new one each time)
    canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
    new, sha256 = hmac.new, hashlib.sha256

    def input_hash(record: dict) -> str:
        return new(secret, canonical(record).encode("utf-8"), sha256).hexdigest()

    return input_hash


class AuditLog:
    """The audit table at ``url``; ``audit_sync`` ("normal" or "full") sets SQLite's
    ``synchronous`` level in WAL mode (see the module docstring for what each survives)."""

    def __init__(self, url: str, *, audit_sync: str = "normal"):
        from sqlalchemy import (Column, Integer, MetaData, String, Table, Text, create_engine,
                                event)

        self.url = url
        self.audit_sync = check_audit_sync(audit_sync)
        self.is_sqlite = url.startswith("sqlite")
        kw: dict = {}
        if self.is_sqlite:
            kw["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if "/file:" in url and "uri=true" not in url:
                url += ("&" if "?" in url else "?") + "uri=true"
            db = url.split(":///", 1)[-1].split("?")[0]
            if db and not db.startswith("file:") and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        else:
            kw["pool_pre_ping"] = True
        self.engine = create_engine(url, **kw)
        if self.is_sqlite:
            sync = AUDIT_SYNC[self.audit_sync]

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised via sqlite
                cur = dbapi_conn.cursor()
                try:
                    mode = str(cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
                except Exception:  # read-only database: writes fail closed later
                    mode = ""
                # NORMAL is durable against a process crash only with WAL; else stay on FULL
                # WAL checkpoints run in a background thread (see _Checkpointer); the commit
                # that crosses this many WAL pages checkpoints itself only if that falls behind
                for pragma in (f"PRAGMA synchronous={sync if mode == 'wal' else 'FULL'}",
                               "PRAGMA busy_timeout=30000",
                               f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_PAGES}"):
                    try:
                        cur.execute(pragma)
                    except Exception:  # nosec B110 # read-only database: writes fail closed later
                        pass
                cur.close()
        self.meta = MetaData()
        self.table = Table(
            "audit", self.meta,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("time", String(40), nullable=False),
            Column("request_id", String(64), nullable=False, index=True),
            Column("key_id", String(64), nullable=False),
            Column("model_version", String(128), nullable=False),
            Column("input_hash", String(64), nullable=False),
            Column("output", Text, nullable=False),
        )
        # SQLite allows one writer at a time; serialising writers in-process avoids
        # busy-waiting. Other databases handle concurrent inserts themselves.
        self._lock = threading.Lock() if self.is_sqlite else None
        self._writer = None  # SQLite: the DBAPI connection appends go through
        self._checkpointer: _Checkpointer | None = None
        self.ready_error: str | None = None
        self.ensure()

    def ensure(self) -> bool:
        try:
            self.meta.create_all(self.engine, checkfirst=True)
            self.ready_error = None
            return True
        except Exception as exc:
            self.ready_error = type(exc).__name__
            return False

    def append(self, rows: list[dict]) -> None:
        """Insert ``rows`` in one transaction, or raise :class:`AuditUnavailable`."""
        if not rows:
            return
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        dumps = _OUTPUT_JSON
        values = [(now, r["request_id"], r["key_id"], r["model_version"], r["input_hash"],
                   dumps(r["output"])) for r in rows]
        try:
            if self.ready_error is not None and not self.ensure():
                raise AuditUnavailable(self.ready_error)
            if self._lock is not None:
                with self._lock:
                    self._sqlite_append(values)
            else:
                with self.engine.begin() as conn:
                    self._insert(conn, values)
        except AuditUnavailable:
            raise
        except Exception as exc:  # SQLAlchemyError, OSError (disk full, read-only)...
            raise AuditUnavailable(type(exc).__name__) from None

    def _insert(self, conn, values: list[tuple]) -> None:
        conn.execute(self.table.insert(), [dict(zip(_INSERT_COLUMNS, v)) for v in values])

    def _sqlite_append(self, values: list[tuple]) -> None:
        """All rows in one DBAPI ``executemany`` and one commit, on a connection this log
        keeps for its writes (held under ``self._lock``; the pool's checkout, reset and
        rollback-on-return cost more than the insert). A failed write rolls back, and the
        connection is replaced before the next one."""
        if self._writer is None:
            self._writer = self.engine.raw_connection()  # the connect event set the pragmas
            if self._checkpointer is None:
                cur = self._writer.cursor()
                mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
                cur.close()
                if str(mode).lower() == "wal":
                    self._checkpointer = _Checkpointer(self)
        conn = self._writer
        try:
            cur = conn.cursor()
            try:
                cur.executemany(self._sqlite_insert, values)
            finally:
                cur.close()
            conn.commit()
            if self._checkpointer is not None:
                self._checkpointer.wrote(len(values))
        except BaseException:
            self._writer = None
            try:
                conn.rollback()
            finally:
                conn.invalidate()  # do not return a connection in an unknown state to the pool
            raise

    # constant column names and bound '?' parameters: no value is ever formatted into the SQL
    _sqlite_insert = (f"INSERT INTO audit ({', '.join(_INSERT_COLUMNS)}) "  # nosec B608 # constant columns, bound values
                      f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})")

    def ready(self) -> bool:
        """Reachable, the table exists and a row can be written (the probe is rolled back)."""
        from sqlalchemy import func, select

        if self.ready_error is not None and not self.ensure():
            return False
        try:
            with self.engine.connect() as conn:
                conn.execute(select(func.count()).select_from(self.table)).scalar()
            # probe writability: insert a row inside a transaction and roll it back
            with self.engine.connect() as conn:
                trans = conn.begin()
                try:
                    conn.execute(self.table.insert(), [{
                        "time": "", "request_id": "readyz-probe", "key_id": "-",
                        "model_version": "-", "input_hash": "-", "output": "{}"}])
                finally:
                    trans.rollback()
            return True
        except Exception:
            return False

    def count(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar())

    def recent(self, limit: int = 50) -> list[dict]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(select(self.table).order_by(self.table.c.id.desc()).limit(limit))
            return [self._row(r) for r in rows]

    @staticmethod
    def _row(r) -> dict:
        d = dict(r._mapping)
        try:
            d["output"] = json.loads(d["output"])
        except (TypeError, ValueError):
            pass
        return d

    def iter_rows(self, chunk: int = 5000):
        from sqlalchemy import select

        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(select(self.table).where(self.table.c.id > last)
                                    .order_by(self.table.c.id).limit(chunk)).fetchall()
            if not rows:
                return
            for r in rows:
                yield dict(r._mapping)
            last = rows[-1].id

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._lock is not None:
            with self._lock:
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
        self.engine.dispose()


class _Checkpointer:
    """WAL checkpoints off the request path. SQLite's default checkpoints the WAL inside the
    commit that crosses 1,000 pages, so every few batches one request also copies the WAL into
    the database and waits for its fsync (tens to hundreds of ms: the batch tail). Here a
    daemon thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection after
    :data:`_CHECKPOINT_ROWS` rows or every :data:`_CHECKPOINT_EVERY_S` seconds; a passive
    checkpoint takes no write lock, so commits go on meanwhile. Durability is unchanged (a
    commit is in the WAL before it returns). The thread ends when the log is closed or
    garbage-collected; if it ever stops, SQLite's own checkpoint at
    :data:`_WAL_BACKSTOP_PAGES` pages still bounds the WAL."""

    def __init__(self, log: AuditLog):
        self._due = threading.Event()
        self._stop = threading.Event()
        self._rows = 0
        self._thread = threading.Thread(target=self._run, args=(weakref.ref(log), self._due,
                                                                self._stop),
                                        name="audit-wal-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self._rows += n
        if self._rows >= _CHECKPOINT_ROWS:
            self._rows = 0
            self._due.set()

    def stop(self) -> None:
        self._stop.set()
        self._due.set()
        self._thread.join(timeout=10)

    @staticmethod
    def _run(ref, due: threading.Event, stop: threading.Event) -> None:
        conn = None
        try:
            while not stop.is_set():
                due.wait(_CHECKPOINT_EVERY_S)
                due.clear()
                log = ref()
                if log is None or stop.is_set():
                    return
                try:
                    if conn is None:
                        conn = log.engine.raw_connection()
                    del log
                    cur = conn.cursor()
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    cur.close()
                except Exception:  # busy, read-only, gone: the next round retries
                    if conn is not None:
                        with contextlib.suppress(Exception):  # a broken connection: drop it
                            conn.invalidate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):  # interpreter shutdown
                    conn.close()


def export_csv(url: str, out_csv: str | Path) -> int:
    """Write every audit row to ``out_csv`` (atomically); return the number of rows."""
    import io

    from ..reports._io import atomic_write_text

    log = AuditLog(audit_url(url))
    try:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        n = 0
        for row in log.iter_rows():
            w.writerow([row[c] for c in COLUMNS])
            n += 1
        atomic_write_text(Path(out_csv), buf.getvalue())
        return n
    finally:
        log.close()
