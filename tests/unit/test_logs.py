"""The node's log formats: a JSON object per line, parseable whatever it carries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kvstore.node import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_fields_extra_and_exceptions(restore_root: None) -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    log = logging.getLogger("kvstore.test")
    log.info("stored %d hints", 3, extra={"peer": "127.0.0.1:7102", "key": b"\xff\n"})
    log.debug("not shown at info")
    try:
        raise ValueError("broken\nrecord")
    except ValueError:
        log.exception("merge failed")
    first, second = _lines(stream)
    assert first["msg"] == "stored 3 hints"
    assert first["level"] == "info"
    assert first["logger"] == "kvstore.test"
    assert first["peer"] == "127.0.0.1:7102"
    assert first["key"] == repr(b"\xff\n")  # not JSON: its repr, and the line still parses
    assert str(first["ts"]).endswith("+00:00")
    assert "exc" not in first
    assert second["level"] == "error"
    assert "ValueError: broken\nrecord" in str(second["exc"])
    assert stream.getvalue().count("\n") == 2  # a newline in a message stays inside its line


def test_text_format_and_level(restore_root: None) -> None:
    stream = io.StringIO()
    logs.configure("warning", "text", stream)
    logging.getLogger("kvstore.test").info("quiet")
    logging.getLogger("kvstore.test").warning("loud")
    text = stream.getvalue()
    assert "quiet" not in text
    assert " WARNING kvstore.test: loud" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
