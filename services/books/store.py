"""The books store: each paper book's state, the record of every step that moved it, and the latest
reconciliation; the only module that spells their keys."""

from __future__ import annotations

from shared.datasets import day_of
from shared.errors import LakeKeyNotFound
from shared.records import BookName, BookState, BookStep, Reconciliation
from shared.storage import Lake

BOOKS = "books/"


def state_key(book: BookName) -> str:
    return f"{BOOKS}book={book}/state.json"


def step_key(book: BookName, close_ts: int) -> str:
    """One step per daily close it advanced to: a re-run of the same close writes the same key."""
    return f"{BOOKS}book={book}/steps/date={day_of(close_ts)}.json"


def reconciliation_key() -> str:
    return f"{BOOKS}reconciliation.json"


def load_state(lake: Lake, book: BookName) -> BookState | None:
    try:
        return BookState.model_validate(lake.get_json(state_key(book)))
    except LakeKeyNotFound:
        return None


def save(lake: Lake, state: BookState, step: BookStep) -> None:
    """The step first, then the state: a crash between them leaves the old state, and the step run again writes the
    same step record."""
    lake.put_json(step_key(state.book, step.closes[-1]), step.model_dump(mode="json"))
    lake.put_json(state_key(state.book), state.model_dump(mode="json"))


def steps(lake: Lake, book: BookName) -> list[BookStep]:
    """Every step of the book, oldest first."""
    prefix = f"{BOOKS}book={book}/steps/"
    return [BookStep.model_validate(lake.get_json(k)) for k in sorted(lake.list(prefix)) if k.endswith(".json")]


def save_reconciliation(lake: Lake, doc: Reconciliation) -> str:
    key = reconciliation_key()
    lake.put_json(key, doc.model_dump(mode="json"))
    return key


def load_reconciliation(lake: Lake) -> Reconciliation | None:
    try:
        return Reconciliation.model_validate(lake.get_json(reconciliation_key()))
    except LakeKeyNotFound:
        return None


__all__ = ["load_reconciliation", "load_state", "save", "save_reconciliation", "state_key", "step_key", "steps"]
