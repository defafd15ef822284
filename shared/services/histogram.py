"""Counts over a query's range, by hour or day, split by status or category: from the index
alone, never an archive blob (GET /api/activity/histogram).

* With an indexed filter (shared.core.query_spec.INDEX_ORDER), each filter's postings are
  read month by month and intersected: a place (blob, second of day, ordinal) is one record,
  its second gives the bucket, its blob's class the category, and the status postings of
  Succeeded, Failed, Started and Accepted its status (any other status counts as `Other`).
  Exact, to the second at the range's ends. A month whose blobs lack a filter's postings
  (written before resource group and status were indexed: shared.services.index_kinds) is
  not counted and is named in `unindexed`; lacking status postings only, its counts are
  split as `Unknown`.
* Without one, each day's manifest rows give each blob's count, class and time span: exact
  by day (a blob holds one day), and by hour when a blob's span is within the hour; a blob
  across buckets is shared out by time (`exact` false). By status, the four statuses come
  from their postings, exactly; the blob's other records are shared out as `Other`.

Filters the index cannot apply (resource type, level, keyword) are named in `not_applied`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.adapters.index_tables import IndexTables
from shared.core.archive_keys import (
    CLASS_CATEGORIES,
    BlobRef,
    category_class,
    month_of,
)
from shared.core.keys import LEGACY_KINDS
from shared.core.query_spec import (
    MAX_LIMIT,
    ActivityQuery,
    QueryError,
    index_keys,
)
from shared.services.archive_read import Manifest
from shared.services.histogram_read import (
    FEW_VALUES,
    Places,
    committed_blobs,
    committed_refs,
    month_values,
)
from shared.services.index_kinds import kinds_of
from shared.services.postings_read import month_postings
from shared.services.query import months_back, read_query
from shared.services.query_page import Page, ScanBudget, day_ticks, ticks

BUCKETS = {"hour": 3600, "day": 86_400}  # seconds
SPLITS = ("status", "category")
KNOWN_STATUSES = ("Succeeded", "Failed", "Started", "Accepted")
OTHER = "Other"
UNKNOWN = "Unknown"  # status, in a month without status postings
HOURLY_UP_TO = timedelta(days=3)  # the default bucket: hour up to this range, else day
MAX_BUCKETS = 10_000
NOT_INDEXED = ("resource_type", "level", "text")
OPTIONS = ("bucket", "split")
_TICKS = 10_000_000  # a second


@dataclass
class Histogram:
    query: ActivityQuery
    bucket: str
    split: str
    counts: dict[int, Counter[str]] = field(default_factory=dict)  # bucket number: counts
    exact: bool = True
    unindexed: list[str] = field(default_factory=list)  # months not counted

    def __post_init__(self) -> None:
        self.step = BUCKETS[self.bucket] * _TICKS
        # [low, high) in ticks: records are placed to the second (postings hold no finer)
        self.low = ticks(self.query.since_text) // _TICKS * _TICKS
        self.high = ticks(self.query.until_text)
        self.start = self.low // self.step * self.step  # the first bucket's
        self.size = -(-(self.high - self.start) // self.step)
        if ticks(self.query.since_text) % _TICKS or self.high % _TICKS:
            # A bound inside a second: its second's records are all counted or none, not
            # `exact` (found from outside: `until=…00:00:00.0000005Z` said exact, 1 too many).
            self.exact = False

    def add_day(self, day: date, label: str, places: set[tuple[int, int]]) -> None:
        """Records at places (second of day, ordinal) of a day: counted at once when the
        whole day is one bucket of the range."""
        base = day_ticks(day)
        end = base + BUCKETS["day"] * _TICKS
        if self.step == end - base and self.low <= base and end <= self.high:
            self.add(base, label, len(places))
            return
        for second, _ in places:
            self.add(base + second * _TICKS, label)

    def add(self, at: int, label: str, count: int = 1) -> None:
        """`count` records at `at` (ticks), if within the range."""
        if self.low <= at < self.high:
            self.counts.setdefault((at - self.start) // self.step, Counter())[label] += count

    def as_dict(self) -> dict[str, Any]:
        buckets: list[dict[str, Any]] = []
        total = 0
        for number in range(self.size):
            counts = self.counts.get(number, Counter())
            shown = {label: count for label, count in sorted(counts.items()) if count}
            total += sum(shown.values())
            start = _moment(self.start + number * self.step)
            buckets.append({"start": f"{start:%Y-%m-%dT%H:%M:%S}Z", "counts": shown})
        given = [name for name in NOT_INDEXED if getattr(self.query, name) is not None]
        return {
            "bucket": self.bucket,
            "split": self.split,
            "since": _iso(self.query.since),
            "until": _iso(self.query.until),
            "buckets": buckets,
            "total": total,
            "exact": self.exact and not given,
            "not_applied": given,
            "unindexed": self.unindexed,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(at: int) -> datetime:
    return datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=at // 10)


def _options(params: Mapping[str, str]) -> tuple[str | None, str]:
    bucket, split = params.get("bucket"), params.get("split", "status")
    if bucket is not None and bucket not in BUCKETS:
        raise QueryError(f"bucket must be one of {', '.join(BUCKETS)}; got {bucket[:20]!r}")
    if split not in SPLITS:
        raise QueryError(f"split must be one of {', '.join(SPLITS)}; got {split[:20]!r}")
    return bucket, split


def histogram(params: Mapping[str, str], now: datetime, tables: IndexTables) -> Histogram:
    """The use case: the parameters checked (the query's, `bucket` and `split`), the counts
    read from the index."""
    bucket, split = _options(params)
    rest = {name: value for name, value in params.items() if name not in OPTIONS}
    query = read_query(rest, now, tables, max_limit=MAX_LIMIT, ahead=False)
    if bucket is None:
        bucket = "hour" if query.until - query.since <= HOURLY_UP_TO else "day"
    if "since" not in params:
        # A key lookup's default start is the index's oldest day, which one record dated
        # 0001-01-01 puts there: the timeline keeps to the buckets it may give, and says so.
        earliest = query.until - timedelta(seconds=BUCKETS[bucket] * (MAX_BUCKETS - 1))
        query = replace(query, since=max(query.since, earliest))
    result = Histogram(query, bucket, split)
    if result.size > MAX_BUCKETS:
        instead = "a shorter range" if bucket == "day" else "bucket=day or a shorter range"
        raise QueryError(
            f"bucket={bucket} gives {result.size} buckets over this range, at most "
            f"{MAX_BUCKETS}: choose {instead}"
        )
    held = set(tables.months())
    oldest, newest = query.since.date(), query.last_day
    months = [(t, b) for t, b in months_back(newest, oldest) if month_of(t) in held]
    if index_keys(query):
        _keyed(result, months, tables)
    else:
        _unkeyed(result, months, tables)
    return result


# --- with an indexed filter: postings, intersected ------------------------------------------


def _month_places(
    tables: IndexTables, top: date, bottom: date, kind: str, values: list[str]
) -> dict[str, Places]:
    """Each value's places in a month's days [bottom, top]: a kind with few values in one
    scan of the month, another a value at a time, a day at a time."""
    if kind in FEW_VALUES:
        return month_values(tables, month_of(top), kind, values, (top, bottom))
    found: dict[str, Places] = {}
    for value in values:
        places: Places = found.setdefault(value, {})
        chunks = month_postings(tables, month_of(top), (kind, value), (top, bottom))
        for day, postings, _ in chunks:  # a day may come in several chunks: all are counted
            if bottom <= day <= top:
                held_today = places.setdefault(day, {})
                for ref, held in postings:
                    held_today.setdefault(ref, set()).update(held)
    return found


def _read_places(
    tables: IndexTables, months: list[tuple[date, date]], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, tuple[str, str]], Places]:
    """Each (month, key)'s places, side by side; only for kinds the month's blobs all have."""
    kinds = kinds_of(tables)
    covered = dict(
        zip(months, tables.parallel(lambda m: kinds.of(month_of(m[0])), months), strict=True)
    )
    by_kind: dict[str, list[str]] = {}
    for kind, value in dict.fromkeys(keys):
        by_kind.setdefault(kind, []).append(value)
    tasks = [
        (top, bottom, kind, values)
        for top, bottom in months
        for kind, values in by_kind.items()
        if kind in LEGACY_KINDS or kind in covered[(top, bottom)]
    ]
    read = tables.parallel(lambda task: _month_places(tables, *task), tasks)
    return {
        (month_of(top), (kind, value)): places
        for (top, _, kind, _), got in zip(tasks, read, strict=True)
        for value, places in got.items()
    }


def _manifests(
    tables: IndexTables, months: list[tuple[date, date]]
) -> dict[str, dict[BlobRef, Manifest]]:
    """Each month's committed blobs (of the days of the range), side by side."""
    read = tables.parallel(lambda m: committed_blobs(tables, m[0], m[1]), months)
    return {month_of(top): got for (top, _), got in zip(months, read, strict=True)}


def _intersect(sources: list[Places]) -> Places:
    """The places every source holds."""
    first, *others = sources
    found: Places = {}
    for day, refs in first.items():
        for ref, places in refs.items():
            kept = set(places)
            for other in others:
                kept &= other.get(day, {}).get(ref, set())
            if kept:
                found.setdefault(day, {})[ref] = kept
    return found


def _keyed(result: Histogram, months: list[tuple[date, date]], tables: IndexTables) -> None:
    keys = index_keys(result.query)
    splits = [("t", status) for status in KNOWN_STATUSES] if result.split == "status" else []
    with ThreadPoolExecutor(1) as pool:  # the committed blobs beside the postings
        blobs = pool.submit(tables.parallel, lambda m: committed_refs(tables, *m), months)
        read = _read_places(tables, months, [*keys, *splits])
        refs = blobs.result()
    committed = {month_of(top): held for (top, _), held in zip(months, refs, strict=True)}
    wanted = _class_of(result.query)
    for top, _ in months:
        month = month_of(top)
        sources = [read.get((month, key)) for key in keys]
        if any(source is None for source in sources):
            result.unindexed.append(f"{month[:4]}-{month[4:]}")
            continue
        labels = [(s, read.get((month, ("t", s)))) for s in KNOWN_STATUSES]
        for day, held in _intersect([s for s in sources if s is not None]).items():
            for ref, places in held.items():
                if ref in committed[month] and wanted in (None, ref.archive_class):
                    _count(result, day, ref, places, labels)


def _count(
    result: Histogram,
    day: date,
    ref: BlobRef,
    places: set[tuple[int, int]],
    labels: list[tuple[str, Places | None]],
) -> None:
    """A blob's places of a day, by category, or by status: each status's places among
    them (a set intersection), the rest `Other` (`Unknown` without status postings)."""
    if result.split == "category":
        result.add_day(day, _category(ref), places)
        return
    if any(status_places is None for _, status_places in labels):
        result.exact = False
        result.add_day(day, UNKNOWN, places)
        return
    rest = places
    for status, status_places in labels:
        held = rest & status_places.get(day, {}).get(ref, set()) if status_places else set()
        if held:
            result.add_day(day, status, held)
            rest = rest - held
    if rest:
        result.add_day(day, OTHER, rest)


def _category(ref: BlobRef) -> str:
    return CLASS_CATEGORIES.get(ref.archive_class, OTHER)  # class `other`: any other category


def _class_of(query: ActivityQuery) -> str | None:
    return category_class(query.category) if query.category else None


# --- without one: manifests (and the status postings) ---------------------------------------


def _unkeyed(result: Histogram, months: list[tuple[date, date]], tables: IndexTables) -> None:
    page = Page(result.query, None, ScanBudget())  # its range and class: which blobs count
    listed = [
        [m for m in found.values() if page.spans(m) and page.wanted in (None, m.ref.archive_class)]
        for found in _manifests(tables, months).values()
    ]
    labelled: Counter[BlobRef] = Counter()
    statuses_known: set[str] = set()
    if result.split == "status":
        keys = [("t", status) for status in KNOWN_STATUSES]
        read = _read_places(tables, months, keys)
        counted = {manifest.ref for day_manifests in listed for manifest in day_manifests}
        for top, _ in months:
            month = month_of(top)
            if all((month, key) in read for key in keys):
                statuses_known.add(month)
                _add_statuses(result, read, month, labelled, counted)
    for day_manifests in listed:
        for manifest in day_manifests:
            ref = manifest.ref
            if result.split == "category":
                _share(result, manifest, manifest.count, _category(ref))
            else:
                rest = manifest.count - labelled[ref]
                label = OTHER if ref.month in statuses_known else UNKNOWN
                _share(result, manifest, rest, label)


def _add_statuses(
    result: Histogram,
    read: dict[tuple[str, tuple[str, str]], Places],
    month: str,
    labelled: Counter[BlobRef],
    counted: set[BlobRef],
) -> None:
    """The four statuses' places in the blobs counted (committed, in the range and class)."""
    for status in KNOWN_STATUSES:
        for day, refs in read[(month, ("t", status))].items():
            base = day_ticks(day)
            for ref, places in refs.items():
                if ref not in counted:
                    continue
                labelled[ref] += len(places)
                for second, _ in places:
                    result.add(base + second * _TICKS, status)


def _share(result: Histogram, manifest: Manifest, count: int, label: str) -> None:
    """A blob's `count` records over its span: whole in one bucket, else shared out by time
    in whole records (largest remainders), what falls outside the range left out."""
    if count <= 0:
        return
    low, high = manifest.low_ticks, manifest.high_ticks
    if label == UNKNOWN:
        result.exact = False
    inside = result.low <= low and high < result.high
    if inside and (low - result.start) // result.step == (high - result.start) // result.step:
        result.add(low, label, count)
        return
    result.exact = False  # across buckets, or partly outside the range
    # Cut at each bucket's start and at the range's bounds: a piece is in the range or out of
    # it whole (found from outside: a piece cut from the blob's first record and kept or
    # dropped by its start counted half a day as 0, and one second as the whole day).
    bounds = [bound for bound in (result.low, result.high) if low < bound <= high]
    pieces: list[tuple[int, int]] = []  # (start, ticks of the span in that bucket)
    at = low
    while at <= high:
        end = min(high + 1, result.start + ((at - result.start) // result.step + 1) * result.step)
        end = min([end, *(bound for bound in bounds if at < bound)])
        pieces.append((at, end - at))
        at = end
    shares = [count * length / (high - low + 1) for _, length in pieces]
    whole = [int(share) for share in shares]
    by_remainder = sorted(range(len(pieces)), key=lambda i: whole[i] - shares[i])
    for i in by_remainder[: count - sum(whole)]:
        whole[i] += 1
    for (start, _), records in zip(pieces, whole, strict=True):
        if records:
            result.add(start, label, records)
