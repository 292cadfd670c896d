"""Log lines for operators: plain text by default, one JSON object per line with LOG_FORMAT=json.

Every line carries the request id (realtime.context) of the request it was logged for, `-` outside one,
so one grep follows a request from the proxy through the worker that took it to the worker that held the
stream it changed.
"""

import json
import logging
import os
import time

from realtime.context import request_id


class RequestIdFilter(logging.Filter):
    """Adds `request_id` and `pid` to every record (a filter on the handler: records of every logger pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.pid = os.getpid()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, pid, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": getattr(record, "pid", os.getpid()),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
