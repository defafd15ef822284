"""The CLI's `verify` verb: proves the archive complete and unaltered, or names what is not.

Exit 0 when no blob is missing, altered, orphaned or stray, no event is duplicated,
unarchived or unindexed and no posting dangles; 3 otherwise, with the report; 2 for a bad
--since/--until.
The plain form is a short summary, then one line per problem (`kind  name  detail`); --json
prints one object (shared.services.verify.VerifyReport.as_dict).

--repair adds what shared.services.repair would do about each problem (`repair  kind  name
does`), changing nothing; --repair --apply does it, then verifies again: the exit code and
the report are the second verify's. --json then prints {"verify", "repair", "after"}.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson

from shared.bootstrap import Runtime
from shared.core.query_spec import CONTROL, ActivityQuery, QueryError, parse_query
from shared.core.retention_policy import RetentionPolicy, policy_from
from shared.services.repair import RepairReport, repair
from shared.services.retention_audit import latest_deleting_as_of
from shared.services.verify import verify
from shared.services.verify_report import KINDS, VerifyReport
from shared.settings import Settings
from shared.tools.cli import UsageError

EXIT_OK, EXIT_PROBLEMS = 0, 3


@dataclass(frozen=True, slots=True)
class VerifyRange:
    since: datetime | None  # None: from the archive's first day
    until: datetime | None  # None: to its last
    now: datetime
    query: ActivityQuery  # the range as a query reads it (bounds to the 100 ns)


def verify_range(since: str | None, until: str | None, now: datetime | None = None) -> VerifyRange:
    """--since/--until read as the query verb reads them (ISO 8601, or 15m, 12h, 7d ago);
    UsageError (exit 2) when they cannot be used."""
    now = now or datetime.now(UTC)
    # An empty value is a bad one (as `query` reads it), not none: `--since ''` is refused.
    given = {
        name: value for name, value in (("since", since), ("until", until)) if value is not None
    }
    try:
        query = parse_query(given, now, whole_calendar=True)  # both walk the index's months
    except QueryError as error:
        message = str(error)
        flagged = f"--{message}" if message.startswith(("since", "until")) else message
        raise UsageError(flagged) from None
    # verify checks whole days: an `until` ticks past a microsecond reaches into its own.
    end = query.until
    if query.until_tick and end < datetime.max.replace(tzinfo=UTC):
        end += timedelta(microseconds=1)
    return VerifyRange(
        query.since if "since" in given else None,
        end if "until" in given else None,
        now,
        query,
    )


def _shown(text: str) -> str:
    # Names come from storage and go to a terminal: control characters are neutralised.
    return CONTROL.sub("?", text)


def format_report(report: VerifyReport) -> str:
    verdict = "complete and unaltered" if report.ok else "NOT proven: problems below"
    summary = {
        "archive": verdict,
        "months": report.months,
        "blobs": report.blobs,
        "records": report.records,
        "bytes": report.bytes,
        "pending": report.pending,
        **{kind: report.counts[kind] for kind in KINDS},
    }
    width = max(len(name) for name in summary)
    lines = [f"{name:<{width}}  {value}" for name, value in summary.items()]
    for kind in KINDS:
        for problem in report.problems[kind]:
            blobs = f" ({', '.join(problem.blobs)})" if problem.blobs else ""
            lines.append(_shown(f"{kind}  {problem.name}  {problem.detail}{blobs}"))
        more = report.counts[kind] - len(report.problems[kind])
        if more:
            lines.append(f"{kind}  … and {more} more")
    return "\n".join(lines) + "\n"


def format_repair(repaired: RepairReport) -> str:
    verb = "done" if repaired.applied else "would do (dry run: --apply to do it)"
    lines = [f"repair  {len(repaired.actions)} actions {verb}"]
    lines += [_shown(f"repair  {a.kind}  {a.name}  {a.does}") for a in repaired.actions]
    lines += [_shown(f"not repaired  {a.kind}  {a.name}  {a.does}") for a in repaired.not_repaired]
    if repaired.applied:
        lines.append(f"rearchived  {repaired.rearchived}")
        lines.append(f"already_archived  {repaired.already_archived}")
    lines += [_shown(f"failed  {failure}") for failure in repaired.failed]
    return "\n".join(lines) + "\n"


def _verify(runtime: Runtime, span: VerifyRange) -> VerifyReport:
    settings = runtime.settings
    return verify(
        runtime.tables,
        runtime.archive,
        runtime.reader,
        since=span.since,
        until=span.until,
        now=datetime.now(UTC) if span.now is None else span.now,
        policy=_policy(settings),
        retention_ran=latest_deleting_as_of(runtime.stores.runs),
    )


def _policy(settings: Settings) -> RetentionPolicy:
    """The configured retention, which tells its deletions from damage."""
    return policy_from(settings.retention_days, settings.retention_category_days)


def verify_main(args: argparse.Namespace, span: VerifyRange, runtime: Runtime, out: TextIO) -> int:
    """Run `verify` (and `--repair`) over the runtime's archive and index; the exit code."""
    report = _verify(runtime, span)
    if not getattr(args, "repair", False):
        out.write(
            orjson.dumps(report.as_dict()).decode() + "\n" if args.json else format_report(report)
        )
        out.flush()
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    repaired = repair(
        runtime.tables,
        runtime.archive,
        runtime.writer,
        report,
        apply=args.apply,
        policy=_policy(runtime.settings),
    )
    after = _verify(runtime, span) if args.apply else report
    if args.json:
        shown = {"verify": report.as_dict(), "repair": repaired.as_dict(), "after": after.as_dict()}
        out.write(orjson.dumps(shown).decode() + "\n")
    else:
        out.write(format_report(report) + format_repair(repaired))
        if args.apply:
            out.write("after repair:\n" + format_report(after))
    out.flush()
    return EXIT_OK if after.ok else EXIT_PROBLEMS


def add_verify_verb(verbs: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """The `verify` verb's flags (the command line's contract)."""
    verify = verbs.add_parser(
        "verify",
        help="prove the archive complete and unaltered",
        description="Check every committed archive blob against its manifest (SHA-256, size, "
        "count, JSON lines) and the index against the archive (claims, postings), and list "
        "what is missing, altered, duplicated, unarchived, unindexed, dangling, orphaned, "
        "stray or foreign. Exit 0: the archive is proven; 3: problems, listed; 2: bad arguments.",
    )
    verify.add_argument("--since", help="ISO 8601 time or relative (15m, 12h, 7d); default: all")
    verify.add_argument("--until", help="ISO 8601 time or relative; default: all")
    verify.add_argument("--json", action="store_true", help="print the report as one JSON object")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="also say how each problem would be repaired without losing an event (dry run)",
    )
    verify.add_argument(
        "--apply", action="store_true", help="with --repair: do the repairs, then verify again"
    )
    verify.set_defaults(run=run)
