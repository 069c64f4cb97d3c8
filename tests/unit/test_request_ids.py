"""Request ids: which client ids are kept, and the log lines that carry them."""

from __future__ import annotations

import json
import logging

import pytest
from minerva.v1 import request_ids


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123", True), ("a.b:c_d", True), ("x" * 128, True), ("x" * 129, False),
     ("with space", False), ("new\nline", False), ("", False), (None, False)],
)  # fmt: skip
def test_accept_or_new(sent: str | None, kept: bool) -> None:
    got = request_ids.accept_or_new(sent)
    assert (got == sent) is kept
    assert len(got) == 32 or kept


def test_json_lines_carry_the_request_id() -> None:
    record = logging.LogRecord("core.access", logging.INFO, __file__, 1, "done %s", ("x",), None)
    token = request_ids.current.set("rid-9")
    try:
        request_ids.RequestIdFilter().filter(record)
    finally:
        request_ids.current.reset(token)
    line = json.loads(request_ids.JsonFormatter().format(record))
    assert line["request_id"] == "rid-9" and line["message"] == "done x"
    assert (line["level"], line["logger"]) == ("INFO", "core.access")
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    request_ids.RequestIdFilter().filter(outside)
    assert outside.request_id == "-"
