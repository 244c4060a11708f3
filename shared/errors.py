"""Typed errors carrying a code a user can act on."""

from __future__ import annotations


class CstError(Exception):
    """An error with a stable code (for scripts and reports) and a message for people."""

    exit_code = 2

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class LakeKeyNotFound(CstError):
    def __init__(self, key: str):
        super().__init__("lake_key_not_found", f"no object at lake key {key!r}")
        self.key = key


class FetchError(CstError):
    """A source request that failed after its retries; `retryable` says whether retrying could have helped."""

    def __init__(self, code: str, message: str, *, source: str, attempts: int, retryable: bool):
        super().__init__(code, message)
        self.source = source
        self.attempts = attempts
        self.retryable = retryable
