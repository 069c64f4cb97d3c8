"""Request ids both processes log and pass along: `x-request-id` (an HTTP header and a gRPC
metadata key), taken from the client when well-formed, generated otherwise; and the log setup
that writes them, as text or (opt-in) JSON lines."""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar

HEADER = "x-request-id"
LOG_FORMATS = ("text", "json")
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# The id of the request being served by this task ("-" outside any request).
current: ContextVar[str] = ContextVar("request_id", default="-")


def accept_or_new(value: str | None) -> str:
    """The client's id when it is a safe token (it is echoed and logged), else a fresh one."""
    if value and _VALID.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logging for a process: request ids on every line; `fmt` "text" or "json"."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
