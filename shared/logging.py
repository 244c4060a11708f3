"""Logging set-up; every record is redacted of configured secret values at creation, for every handler."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Iterable

REDACTED = "***"

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_base_factory = logging.getLogRecordFactory()


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every secret value in text (longest first, so a secret containing another goes whole)."""
    for secret in sorted(secrets if secrets is not None else _secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redacting_factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if not _secrets:
        return record
    # Merge args now so no handler or formatter ever sees the unredacted values.
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed log call must not leak through a later format
        message = f"{record.msg!r} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        # Keep the type for filters, drop the live exception whose str() holds the secret.
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def set_secrets(secrets: Iterable[str]) -> None:
    """Register the values to redact; installs the redacting record factory once."""
    global _secrets
    with _lock:
        _secrets = tuple(s for s in secrets if s)
        if logging.getLogRecordFactory() is not _redacting_factory:
            logging.setLogRecordFactory(_redacting_factory)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (test capture, a redirected CLI), not the one at set-up."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Console logging to stderr for the CLI; redaction is installed before any handler can format."""
    set_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(getattr(h, "_cst", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._cst = True  # type: ignore[attr-defined]
        root.addHandler(handler)
