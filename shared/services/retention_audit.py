"""A retention run's report, and its one audit row in the runs table, written as it goes.

The row is written when the run starts (`complete: false`) and rewritten before every deletion
step with counts that already include that step: a run killed at any point leaves a row that
is true or over-reports, never one that under-reports. A step that raises leaves
`complete: false` and its `error` on the row. Rows sort newest run first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.data.tables import TableClient, UpdateMode

log = logging.getLogger(__name__)

MAX_AUDIT_TEXT = 30_000  # a string property holds 32K characters
MAX_ERROR_TEXT = 2_000


@dataclass(slots=True)
class RetentionReport:
    """What a run deleted and kept. Records are counted from manifest rows (their `N`), so
    deletions by category are known without reading a blob; by subscription they are not
    (a manifest does not say), and are not reported."""

    as_of: str
    dry_run: bool
    records_deleted: int = 0  # records of the archive blobs deleted (manifest counts)
    records_kept: int = 0  # records of the committed blobs that stay
    rows_unreadable: int = 0  # manifest rows whose keys name no blob: kept, not counted
    archive_blobs_deleted: int = 0  # committed archive blobs deleted
    days_deleted: int = 0  # (class, day) units deleted
    tables_dropped: int = 0  # month tables dropped whole
    key_rows_deleted: int = 0
    orphans_swept: int = 0  # archive blobs without a manifest (a write that never committed)
    requests: int = 0  # storage requests the archive's retention made (see retention_archive)
    blobs_deleted: int = 0  # Azure's PT1H.json blobs
    blobs_skipped: list[dict[str, str]] = field(default_factory=list)
    cursors_deleted: int = 0
    deadletters_deleted: int = 0
    deleted_by_category: dict[str, int] = field(default_factory=dict)
    oldest_kept: str | None = None
    complete: bool = False
    error: str | None = None
    seconds: float = 0.0

    def skip(self, blob: str, reason: str) -> None:
        """A blob kept that was due to go (protected, or named outside the layout)."""
        self.blobs_skipped.append({"blob": blob, "reason": reason})
        log.warning("blob kept", extra={"blob": blob, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def add_counts(totals: dict[str, int], counts: Mapping[str, int]) -> None:
    """Add counts (negative ones take back); a name whose total is 0 is left out."""
    for name, count in counts.items():
        total = totals.get(name, 0) + count
        if total:
            totals[name] = total
        else:
            totals.pop(name, None)


def audit_json(value: dict[str, Any] | list[Any]) -> tuple[str, int | None]:
    """JSON that fits a string property: when the whole would not, the first entries and
    the number of all of them."""
    text = orjson.dumps(value).decode()
    if len(text) <= MAX_AUDIT_TEXT:
        return text, None
    items = list(value.items()) if isinstance(value, dict) else list(value)
    keep = len(items)
    while keep and len(text) > MAX_AUDIT_TEXT:
        keep //= 2
        part = dict(items[:keep]) if isinstance(value, dict) else items[:keep]
        text = orjson.dumps(part).decode()
    return text, len(items)


def run_key() -> str:
    """Newest run first; a random tail keeps two runs started in one millisecond apart."""
    millis = int(datetime.now(UTC).timestamp() * 1000)
    return f"{10**15 - millis:015d}-{uuid.uuid4().hex[:8]}"


class AuditRow:
    """The run's one row in the runs table, replaced with the report as the run goes."""

    def __init__(self, runs: TableClient, report: RetentionReport) -> None:
        self._runs = runs
        self._key = run_key()
        self.report = report

    def before_step(self) -> None:
        """Before a deletion step: the row, with counts that already include the step.

        A dry run deletes nothing, so it writes the row only when it starts and ends.
        """
        if not self.report.dry_run:
            self.write()

    def count(self, counter: str, amount: int) -> None:
        setattr(self.report, counter, getattr(self.report, counter) + amount)

    def steps(
        self,
        steps: Iterable[list[str]],
        act: Callable[[str], bool],
        counter: str,
        spent: Callable[[], bool],
    ) -> None:
        """Act on items a step at a time; each step counted, and the row written, first.

        `act` says whether the item went; the counts of those that did not are taken back,
        and so are those of the rest of a step once `spent()` says the time is up.
        """
        for step in steps:
            self.count(counter, len(step))
            self.before_step()
            for number, item in enumerate(step):
                if spent():
                    self.count(counter, number - len(step))
                    return
                if not act(item):
                    self.count(counter, -1)

    def finish(self, seconds: float, *, complete: bool) -> None:
        self.report.complete = complete
        self.report.seconds = round(seconds, 3)
        self.write()

    def fail(self, error: BaseException, seconds: float) -> None:
        """The row after a step raised: `complete: false`, its error, the progress so far.

        Never raises: the step's error is the one the caller goes on with.
        """
        self.report.error = f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]
        try:
            self.finish(seconds, complete=False)
        except Exception:
            # The row keeps the last progress written.
            log.exception("retention audit row not updated after a failed step")

    def write(self) -> None:
        entity: dict[str, Any] = {"PartitionKey": "retention", "RowKey": self._key}
        for name, value in self.report.as_dict().items():
            if isinstance(value, dict | list):
                entity[name], total = audit_json(value)
                if total is not None:
                    entity[f"{name}_total"] = total
            elif value is not None:
                entity[name] = value
        self._runs.upsert_entity(entity, mode=UpdateMode.REPLACE)


def latest_deleting_as_of(runs: TableClient) -> datetime | None:
    """The latest `as_of` a retention run that deletes (not a dry run) started with, from its
    audit rows; None when none has run. `verify` tells retention's half-done work by it."""
    rows = runs.query_entities(
        "PartitionKey eq @pk and dry_run eq false",
        parameters={"pk": "retention"},
        select=["as_of"],
    )
    latest: datetime | None = None
    for row in rows:
        try:
            as_of = datetime.fromisoformat(str(row.get("as_of")))
        except ValueError:
            continue  # a row of another making: not evidence of a run
        if as_of.tzinfo is not None and (latest is None or as_of > latest):
            latest = as_of
    return latest
