"""JSON-lines logging: the fields of every line, the request id, redaction of secrets."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from turnout.common.logging import (
    LOG_QUEUE_SIZE,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    dropped_records,
    redact,
    request_id_var,
    stop_logging,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service="gateway"))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("turnout.test.logging")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.handlers = []
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_json_with_the_fixed_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("routed to %s in %.1f ms", "llama3.2:3b", 0.42)
    (line,) = lines(stream)
    assert set(line) == {"ts", "level", "service", "logger", "event", "request_id"}
    assert (line["level"], line["service"], line["logger"], line["event"], line["request_id"]) == (
        "INFO",
        "gateway",
        "turnout.test.logging",
        "routed to llama3.2:3b in 0.4 ms",
        None,
    )
    ts = str(line["ts"])
    assert len(ts) == len("2025-01-01T00:00:00.000Z") and ts.endswith("Z") and ts[10] == "T"


def test_request_id_comes_from_the_context_var(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    token = request_id_var.set("req-123")
    try:
        logger.warning("slow upstream")
    finally:
        request_id_var.reset(token)
    logger.warning("outside a request")
    assert [line["request_id"] for line in lines(stream)] == ["req-123", None]


def test_extra_data_is_merged_without_overriding_fixed_fields(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("done", extra={"data": {"model": "m", "latency_ms": 3.5, "level": "spoofed"}})
    (line,) = lines(stream)
    assert (line["model"], line["latency_ms"], line["level"]) == ("m", 3.5, "INFO")


def test_exceptions_are_included_and_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    try:
        raise RuntimeError("upstream said: Authorization: Bearer abc.def-123")
    except RuntimeError:
        logger.exception("forward failed")
    (line,) = lines(stream)
    assert line["level"] == "ERROR"
    assert "RuntimeError: upstream said: Authorization: Bearer ***" in str(line["exc"])
    assert "abc.def-123" not in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.J9.abc", "Authorization: Bearer ***"),
        ("key sk-proj-AbCdEfGhIjKlMnOp in use", "key sk-proj*** in use"),
        ("redis://user:hunter2@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("postgresql+asyncpg://sy:pa55@db/sy", "postgresql+asyncpg://sy:***@db/sy"),
        ('{"api_key": "abc123", "model": "m"}', '{"api_key": "***", "model": "m"}'),
        ("password=hunter2 user=bob", "password=*** user=bob"),
        ("token: t0k3n", "token: ***"),
        ("nothing secret about llama3.2:3b", "nothing secret about llama3.2:3b"),
    ],
)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_arguments_are_redacted_too(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.info("connecting to %s", "redis://u:topsecret@h:1/0")
    assert lines(stream)[0]["event"] == "connecting to redis://u:***@h:1/0"
    assert "topsecret" not in stream.getvalue()


def test_text_formatter_is_redacted_and_carries_the_request_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("sk-abcdefghijkl",), None)
    RequestIdFilter().filter(record)
    out = TextFormatter(service="scorer").format(record)
    assert out.endswith("INFO    scorer x key sk-abcd***")  # no request: no "[None]" on every line
    token = request_id_var.set("req-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert TextFormatter(service="scorer").format(record).endswith("INFO    scorer x [req-1] key sk-abcd***")


def test_configure_logging_installs_json_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("DEBUG", service="sync", json=True)
        token = request_id_var.set("r-9")
        try:
            logging.getLogger("turnout.sync.jobs").debug("imported %d rows", 12)
        finally:
            request_id_var.reset(token)
        logging.getLogger("uvicorn.access").info("GET / 200")  # quietened to WARNING
        stop_logging()  # the writer thread drains the queue
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1
        line = orjson.loads(err[0])
        assert (line["service"], line["level"], line["event"], line["request_id"]) == (
            "sync",
            "DEBUG",
            "imported 12 rows",
            "r-9",
        )
    finally:
        stop_logging()
        root.handlers, _ = saved
        root.setLevel(saved[1])


async def test_a_blocked_log_pipe_does_not_stall_the_event_loop() -> None:
    """Nobody reads the pipe: its 64 KiB buffer fills and the writer thread blocks, while the
    loop goes on logging (records past the queue's bound are dropped and counted) and ticking."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    read_fd, write_fd = os.pipe()
    pipe = os.fdopen(write_fd, "w", buffering=1)
    try:
        configure_logging("INFO", service="gateway", json=True, stream=pipe)
        log = logging.getLogger("turnout.test.blocked")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        for i in range(LOG_QUEUE_SIZE + 2_000):  # ~3.5 MB of lines against a 64 KiB pipe
            log.info("line %d %s", i, "x" * 300)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        task.cancel()
        assert elapsed < 5.0  # it would never end if the loop wrote to the pipe itself
        assert ticks > 0
        # the queue is full, and what did not fit was dropped: 2,000 records less the few
        # hundred the writer took before the pipe's 64 KiB buffer filled
        assert 1_500 < dropped_records() <= 2_000
    finally:
        drained: list[int] = []

        def drain() -> None:  # now read the pipe, so the writer thread can finish
            while chunk := os.read(read_fd, 1 << 16):
                drained.append(len(chunk))

        reader = threading.Thread(target=drain)
        reader.start()
        stop_logging()
        pipe.close()
        reader.join(10)
        os.close(read_fd)
        root.handlers, _ = saved
        root.setLevel(saved[1])
