"""JSON-lines logging with the request id and secret redaction.

``configure_logging(settings, service)`` applies one ``dictConfig``. Every record carries
``ts, level, service, logger, event, request_id``; ``%``-style arguments are formatted into
``event``. Secrets (bearer tokens, ``sk-`` keys, passwords in URLs) are masked in every line.

Nothing is written on the caller's thread: the root logger's only handler is a
:class:`~logging.handlers.QueueHandler` (which reads the request id and formats the message
where the call happens) and one :class:`~logging.handlers.QueueListener` thread formats the
line and writes it to stderr. A slow or blocked log pipe therefore never stalls the event loop;
the queue holds ``LOG_QUEUE_SIZE`` records and past that records are dropped and counted
(:func:`dropped_records`) rather than blocking. The listener drains the queue at exit.
"""

from __future__ import annotations

import atexit
import copy
import logging
import logging.config
import logging.handlers
import queue
import re
import sys
import time
from contextvars import ContextVar
from typing import IO, Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("turnout_request_id", default=None)

_SECRET_PATTERNS = (
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I), r"\1***"),
    (re.compile(r"\b(sk-[A-Za-z0-9_-]{4})[A-Za-z0-9_-]+"), r"\1***"),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)"), r"\1***\2"),
    (re.compile(r"((?:api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", re.I), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, ``sk-`` keys, URL passwords and key/secret values masked."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        """Copy the current request id (a ContextVar) onto the record."""
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str = "turnout") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line: ts, level, service, logger, event, request_id (+ data, exc), redacted."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "event": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None),
        }
        extra = getattr(record, "data", None)
        if isinstance(extra, dict):
            out.update({k: v for k, v in extra.items() if k not in out})
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str = "turnout") -> None:
        super().__init__(f"%(asctime)s %(levelname)-7s {service} %(name)s%(request_tag)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """One readable line, redacted; `` [req-…]`` after the logger only within a request."""
        rid = getattr(record, "request_id", None)
        record.request_tag = f" [{rid}]" if rid else ""
        return redact(super().format(record))


LOG_QUEUE_SIZE = 10_000
"""Records waiting for the writer thread at most; more are dropped (and counted), never blocked on."""


class _BoundedQueueHandler(logging.handlers.QueueHandler):
    """Formats the message on the caller's thread (its args may change later) and keeps the
    traceback for the writer; drops the record when the queue is full."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.message = record.getMessage()
        record.msg, record.args = record.message, None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]  # waits for room: stop() drains first


class _Pipeline:
    """The process's one queue listener (logging is process-wide state by nature)."""

    listener: logging.handlers.QueueListener | None = None
    handler: _BoundedQueueHandler | None = None


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (run at exit; tests call it to flush)."""
    if _Pipeline.listener is not None:
        _Pipeline.listener.stop()
        _Pipeline.listener = None


def dropped_records() -> int:
    """Records dropped because the queue was full (the log pipe was slower than the logging)."""
    return _Pipeline.handler.dropped if _Pipeline.handler is not None else 0


atexit.register(stop_logging)


def configure_logging(level: str = "INFO", *, service: str, json: bool = True, stream: IO[str] | None = None) -> None:
    """Install JSON (or text) lines on ``stream`` (stderr), written by a background thread."""
    stop_logging()
    q: queue.Queue[logging.LogRecord] = queue.Queue(LOG_QUEUE_SIZE)
    writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(JsonFormatter(service) if json else TextFormatter(service))
    _Pipeline.handler = _BoundedQueueHandler(q)
    _Pipeline.listener = _Listener(q, writer)
    _Pipeline.listener.start()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"request_id": {"()": RequestIdFilter}},
            "handlers": {"queue": {"()": lambda: _Pipeline.handler, "filters": ["request_id"]}},
            "root": {"level": level, "handlers": ["queue"]},
            "loggers": {
                "uvicorn.access": {"level": "WARNING"},
                "arq": {"level": "INFO"},
                "aiohttp.access": {"level": "WARNING"},
            },
        }
    )
