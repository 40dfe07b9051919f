"""Logging set-up for the server processes: one place, so every process logs alike.

`PDV_LOG_FORMAT=text` (the default) writes the lines people read; `json` writes one JSON object
per line for a log pipeline. Either way:

- every line of a call carries its `request_id` and, when known, its `trace_id`: the transport
  binds them (`bind_call`) in the call's own context, which the thread pool's job runs in, so
  a line logged anywhere below (the database adapter, the key provider) carries them. A context
  variable and not an argument, because the lines of libraries and adapters below the use cases
  are made where no `RequestContext` reaches;
- a record's extra fields pass an allow-list (`FIELDS`): any other is dropped, never written, so
  a field added carelessly (`extra={"value": ...}`) cannot leak what it holds;
- an exception is written as its class and its stack, never its message (a driver's message can
  quote a row: PostgreSQL's `DETAIL: Key (...)=(...)`).

The access log (`pdvault.access`, one INFO line per call) is written by the transport.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ACCESS_LOGGER",
    "FIELDS",
    "LOG_FORMATS",
    "CallIds",
    "JsonFormatter",
    "TextFormatter",
    "bind_call",
    "configure_logging",
    "formatter",
]

LOG_FORMATS = ("text", "json")
ACCESS_LOGGER = "pdvault.access"

# The extra fields a line may carry; any other is dropped. Each holds a name from a closed set,
# an id made by pdvault, or a number: never a value, a token, a subject or a request field
# (the purpose is the policy's name, or "other").
FIELDS = (
    "request_id",
    "trace_id",
    "method",
    "caller",
    "purpose",
    "status",
    "duration_ms",
    "items",
    "bytes_in",
    "bytes_out",
)

# What the call being served binds: its request id and trace id.
_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "pdvault_call", default=None
)


def bind_call(request_id: str, trace_id: str) -> None:
    """Tie the lines logged from now on in the running context to this call."""
    _call.set((request_id, trace_id))


class CallIds(logging.Filter):
    """Stamps a record with the ids of the call it was logged in (on the handler: it runs when
    the record is emitted, in the thread and context that logged it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _call.get()
        if bound is not None:
            if not getattr(record, "request_id", ""):
                record.request_id = bound[0]
            if bound[1] and not getattr(record, "trace_id", ""):
                record.trace_id = bound[1]
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The allowed extra fields of `record`, in the order of FIELDS; no other."""
    given = record.__dict__
    return {k: given[k] for k in FIELDS if given.get(k) not in ("", None)}


def _exception(record: logging.LogRecord) -> tuple[str, str]:
    """The class and the stack of a record's exception, without its message."""
    if not record.exc_info or record.exc_info[0] is None:
        return "", ""
    kind, _exc, tb = record.exc_info
    stack = "".join(traceback.format_tb(tb)) if tb is not None else ""
    return kind.__qualname__, stack.rstrip()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, and an exception's class and stack."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        extra = _fields(record)
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        kind, stack = _exception(record)
        if kind:
            line += f"\nTraceback (most recent call last):\n{stack}\n{kind} (message withheld)"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the allowed fields, and an
    exception's class (`exc_type`) and stack (`exc_stack`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(_fields(record))
        kind, stack = _exception(record)
        if kind:
            entry["exc_type"] = kind
            entry["exc_stack"] = stack
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(CallIds())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Alembic announces each migration step at INFO: noise for a user starting a server.
    logging.getLogger("alembic").setLevel(logging.WARNING)
