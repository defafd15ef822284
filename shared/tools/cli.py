"""`python -m shared <verb>`: the app's core from the command line.

The verbs' arguments, output and exit codes are a contract that scripts rely on:
exit 0 when all went well, 3 when some input was rejected (the rest still processed),
2 for bad arguments or unreadable files (one line on standard error), 1 when storage or a
sink failed, or another writer holds the events right now (one line on standard error, from
`failure_line`: run again, later; everything is idempotent).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

import orjson
from azure.core.exceptions import AzureError

from shared import settings as names
from shared.core.records import Rejection
from shared.settings import SettingsError
from shared.settings_values import ascii_whole

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED = 0, 1, 2, 3
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a writer its reader left


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as the contract says; `--help` shows the full usage.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# The three settings forwarding needs, as the messages that ask for them name them.
_FORWARDING_SETTINGS = (
    f"{names.LOGS_INGESTION_ENDPOINT}, {names.LOGS_INGESTION_RULE_ID} and "
    f"{names.LOGS_INGESTION_STREAM}"
)


class UsageError(Exception):
    """Bad input from the command line (a date, a folder): exit 2 with its message."""


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _write_json_line(stream: IO[bytes], value: Any) -> None:
    stream.write(orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE))


def cmd_normalize(args: argparse.Namespace) -> int:
    from shared.core.normalize import iter_normalized

    out, err = sys.stdout.buffer, sys.stderr.buffer
    status = EXIT_OK
    for path in args.files or ["-"]:
        try:
            data = _read(path)
        except OSError as error:
            sys.stderr.write(f"normalize: cannot read {path}: {error.strerror or error}\n")
            status = EXIT_USAGE
            continue
        # One result at a time: a large file never holds all its records at once.
        for result in iter_normalized(data, "stdin" if path == "-" else path):
            if isinstance(result, Rejection):
                _write_json_line(err, result.as_dict())
                if status == EXIT_OK:
                    status = EXIT_REJECTED
            else:
                _write_json_line(out, result)
    out.flush()
    return status


def _say(text: str) -> None:
    sys.stderr.write(f"• {text}\n")


@contextmanager
def _runtime(*, indexes: bool = False) -> Iterator[Any]:
    """The app's clients against AzureWebJobsStorage, or Azurite when that is not set. A verb
    that `indexes` records says first when the store is forwarded and this shell is not."""
    from shared.bootstrap import build_runtime
    from shared.settings import STORAGE_CONNECTION, load_settings
    from shared.tools.azurite import local_storage

    with local_storage(_say) as connection:
        env = dict(os.environ)
        if connection:
            env[STORAGE_CONNECTION] = connection
        app = build_runtime(load_settings(env))
        if indexes and app.forwarding is None:
            _say_not_forwarded(app)
        yield app


def _say_not_forwarded(app: Any) -> None:
    """Found from outside: records indexed here while the app forwards were never sent."""
    from shared.adapters.forwarding_declaration import declared

    try:
        declaration = declared(app.stores.runs)
    except AzureError:
        return  # advice only: the verb itself says what storage did
    if declaration is None:
        return
    sys.stderr.write(
        f"• this store forwards to Log Analytics (stream {declaration['Stream']}, last seen "
        f"{declaration['Seen']}), and this shell does not: records indexed here are not sent. "
        f"Set {_FORWARDING_SETTINGS} as the app has them, or send them afterwards with "
        "`python -m shared forward --since <time>` where they are set\n"
    )


def cmd_forward(args: argparse.Namespace) -> int:
    from shared.adapters.forwarding_declaration import ForwardLock
    from shared.services.forward_range import forward_range
    from shared.tools.verify_cli import verify_range

    # Read as `query` reads its range (to the 100 ns; ISO 8601 or 15m, 12h, 7d ago).
    query = verify_range(args.since, args.until).query
    with _runtime() as app:
        if app.forwarding is None:
            raise UsageError(
                f"forwarding to Log Analytics is not configured here: set {_FORWARDING_SETTINGS} "
                "as the app has them" + _invalid_forwarding(app)
            )
        report = forward_range(
            app.tables,
            app.reader,
            app.forwarding,
            app.deadletters,
            since=query.since_text,
            until=query.until_text,
            lock=ForwardLock(app.stores.runs),
        )
        _print_summary(report.as_dict(), args.json)
        for name in report.unreadable:
            _say(f"not sent: {name} cannot be read (`python -m shared verify` says how)")
        if report.unreadable_blobs > len(report.unreadable):
            _say(f"not sent: {report.unreadable_blobs - len(report.unreadable)} more such blobs")
        # Exit 3 when any record of the range is not in Log Analytics for its own reason.
        return EXIT_REJECTED if report.not_forwarded or report.unreadable_blobs else EXIT_OK


def _invalid_forwarding(app: Any) -> str:
    from shared.settings import Section

    error = app.settings.invalid.get(Section.FORWARDING)
    return f" ({error})" if error is not None else ""


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return
    width = max(len(name) for name in summary)
    for name, value in summary.items():
        sys.stdout.write(f"{name:<{width}}  {value}\n")


def event_hub_bodies(path: str, data: bytes) -> list[Any]:
    """A file of Event Hub bodies: one JSON value is one body; JSON Lines (a first line that
    is a value of its own), each non-blank line; anything else, one body (one rejection,
    not a dead letter for each line of a broken pretty-printed file)."""
    from shared.services.delivery import EventBody

    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        # A file's byte order mark is the file's, not its first body's.
        text = data.removeprefix(_BOM)
        lines = [(number, line) for number, line in enumerate(text.split(b"\n"), 1) if line.strip()]
        if lines and _is_json(lines[0][1]):
            return [EventBody(body=line, origin=f"{path}:{number}") for number, line in lines]
    return [EventBody(body=data, origin=path)]


_BOM = b"\xef\xbb\xbf"
# Learn, "Naming and referencing containers, blobs, and metadata": 3-63 characters, lowercase
# letters, digits and single hyphens, starting and ending with a letter or digit.
_CONTAINER_NAME = re.compile(r"(?=.{3,63}\Z)[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def cmd_ingest(args: argparse.Namespace) -> int:
    from shared.services.delivery import deliver
    from shared.services.report import DeliveryReport

    bodies = []
    for path in args.files:
        try:
            bodies.extend(event_hub_bodies(path, _read(path)))
        except OSError as error:
            sys.stderr.write(f"ingest: cannot read {path}: {error.strerror or error}\n")
            return EXIT_USAGE
    with _runtime(indexes=True) as app:
        total = DeliveryReport()
        # As host.json's maxEventBatchSize: the same batches the trigger sees.
        from functions.eventhub_trigger import MAX_EVENT_BATCH_SIZE as batch_size

        # A batch that fails raises RetryableDeliveryError: main() says why in one line.
        for start in range(0, len(bodies), batch_size):
            total.add(
                deliver(
                    bodies[start : start + batch_size],
                    writer=app.writer,
                    deadletters=app.deadletters,
                    forwarding=app.forwarding,
                    final_attempt=False,
                    path="cli",
                )
            )
        _print_summary(total.as_dict(), args.json)
        return EXIT_REJECTED if total.deadlettered else EXIT_OK


def cmd_deadletter_list(args: argparse.Namespace) -> int:
    with _runtime() as app:
        # A blob that is not a readable letter is named on standard error; the rest are listed.
        for letter in app.deadletters.list(args.kind, on_unreadable=_say_unreadable):
            _write_json_line(sys.stdout.buffer, {"name": letter.name, **letter.as_dict()})
        return EXIT_OK


def _say_unreadable(error: Exception) -> None:
    sys.stderr.write(f"deadletter: {error}\n")


def cmd_deadletter_replay(args: argparse.Namespace) -> int:
    from shared.services.replay import replay

    with _runtime(indexes=True) as app:
        summary = replay(app, kind=args.kind)
        _print_summary(summary, args.json)
        if app.forwarder is None and any(summary.values()):
            sys.stderr.write(
                "• forwarding to Log Analytics is not configured in this shell: not-forwarded "
                "letters stay, and records replayed here are indexed without being sent; if "
                f"the app forwards, set {_FORWARDING_SETTINGS} here as it has them, and "
                "replay again\n"
            )
        return EXIT_OK if summary["still_failing"] == 0 else EXIT_REJECTED


def parse_time_argument(text: str) -> datetime:
    """A time flag's value: ISO 8601 (no zone means UTC) or a time ago (15m, 12h, 7d), as
    `query` and `verify` read --since and --until. An argparse type: a bad one exits 2."""
    from shared.core.query_spec import time_ago

    try:
        moment = time_ago(text.strip(), datetime.now(UTC))
        if moment is None:
            moment = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"not a date or time: {text[:64]!r} (ISO 8601 like 2024-05-01, or a time ago like "
            "15m, 12h or 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def given_argument(text: str) -> str:
    """A path or name given on the command line: an empty one is a mistake (a shell variable
    that was not set), never taken to mean the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def whole_number_argument(text: str) -> int:
    """A number flag's value in ASCII digits: int() also reads full-width digits and `_`."""
    value = ascii_whole(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:64]!r}")
    return value


def cmd_backfill(args: argparse.Namespace) -> int:
    from shared.services.catchup import container_sources, index_each
    from shared.tools.folder import folder_sources

    since, until = args.since, args.until
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    if args.parallel < 1:
        raise UsageError(f"--parallel must be 1 or more; got {args.parallel}")
    scope = {"since": since, "until": until, "subscription": args.subscription}
    root = Path(args.path) if args.path else None
    if root is not None and not root.is_dir():
        raise UsageError(f"not a folder: {args.path}")
    with _runtime(indexes=True) as app:
        if root is not None:
            sources = folder_sources(root, **scope)
        else:
            name = args.container or app.settings.archive_container
            if not _CONTAINER_NAME.fullmatch(name):  # else storage answers 400: not "down"
                raise UsageError(f"--container: not a container name: {name!r}")
            container = app.stores.blob_service.get_container_client(name)
            if not container.exists():  # running again cannot help: say which container
                raise UsageError(
                    f"no container {name!r} in this storage account (Azure makes "
                    "insights-activity-logs when it first writes the Activity Log there)"
                )
            sources = container_sources(container, **scope)
        indexer = app.blob_indexer
        progress = None
        if sys.stderr.isatty() and not args.json:
            from tqdm import tqdm

            progress = tqdm(total=len(sources), unit="blob", file=sys.stderr)
        errors: list[Exception] = []
        report = index_each(
            indexer,
            sources,
            parallelism=args.parallel,
            on_done=(lambda _: progress.update(1)) if progress is not None else None,
            on_error=lambda _name, error: errors.append(error),
        )
        if progress is not None:
            progress.close()
        _print_summary(report.as_dict(), args.json)
        if errors:
            raise _to_tell(errors)  # main() says it in one line, or shows a bug's traceback
        if report.failed:
            return EXIT_FAILED
        return EXIT_REJECTED if report.deadlettered else EXIT_OK


def _to_tell(errors: list[Exception]) -> Exception:
    """Of the blobs' failures, the one a backfill ends with: a bug before any failure that
    running again cures, else the first."""
    return next((error for error in errors if failure_line(error) is None), errors[0])


def cmd_retention(args: argparse.Namespace) -> int:
    from shared.core.retention_policy import policy_from
    from shared.services.retention import enforce_retention

    as_of = args.as_of
    with _runtime() as app:
        settings = app.settings
        report = enforce_retention(
            app.stores,
            policy_from(settings.retention_days, settings.retention_category_days),
            as_of=as_of,
            dry_run=args.dry_run or settings.retention_dry_run,
            budget=settings.retention_time_budget_seconds,
        )
        _print_summary(report.as_dict(), args.json)
        return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    from shared.services.compaction import compact

    as_of = args.as_of or datetime.now(UTC)
    with _runtime() as app:
        _print_summary(compact(app.tables, as_of=as_of).as_dict(), args.json)
        return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from shared.tools.pipeline import run

    source = Path(args.source) if args.source else None
    if source is not None and not source.is_dir():
        raise UsageError(f"not a folder: {args.source}")
    if args.events < 1:
        raise UsageError(f"--events must be 1 or more; got {args.events}")
    summary = run(source=source, count=args.events, seed=args.seed, as_json=args.json)
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        sys.stdout.write("\n")
        _print_summary(
            {name: summary[name] for name in ("events", "indexed", "duplicates", "deadlettered")},
            False,
        )
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from shared.tools.query_cli import flags_error, query_main

    problem = flags_error(args)  # bad flags: exit 2 before storage is touched
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    with _runtime() as app:
        return query_main(args, app, sys.stdout)


def cmd_verify(args: argparse.Namespace) -> int:
    from shared.tools.verify_cli import verify_main, verify_range

    if args.apply and not args.repair:
        raise UsageError("--apply goes with --repair")
    span = verify_range(args.since, args.until)  # bad flags: exit 2 before storage is touched
    with _runtime() as app:
        return verify_main(args, span, app, sys.stdout)


def cmd_serve(args: argparse.Namespace) -> int:
    from shared.tools.serve import serve

    if not 0 <= args.port <= 65535:  # the TCP port range
        raise UsageError(f"--port must be from 0 to 65535; got {args.port}")
    try:
        serve(args.host, args.port, _say, verbose=args.verbose)
    except ValueError as error:  # not loopback
        raise UsageError(str(error)) from None
    except OSError as error:  # the port taken, or not ours to bind
        where = f"{args.host}:{args.port}"
        if error.errno == errno.EADDRINUSE:
            raise UsageError(f"{where} is in use: choose another with --port") from None
        raise UsageError(f"cannot listen on {where}: {error.strerror or error}") from None
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m shared",
        description="Keep, search and forward Azure Activity Logs: the app's core as commands.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    normalize = verbs.add_parser(
        "normalize",
        help="normalize Activity Log files to JSON lines",
        description="Read Activity Log events in any exported form (Event Hub bodies, PT1H.json "
        "lines or envelopes, REST/portal JSON) and write one normalized record per line to "
        "standard output; each rejection goes to standard error as one JSON line "
        '{"reason", "source", "raw"}. Exit 0: nothing rejected; 3: something rejected; '
        "2: a file cannot be read.",
    )
    normalize.add_argument(
        "files", nargs="*", type=given_argument, metavar="FILE", help="files; - or none: stdin"
    )
    normalize.set_defaults(run=cmd_normalize)

    ingest = verbs.add_parser(
        "ingest",
        help="deliver files of Event Hub bodies through the Event Hub function's code path",
        description="Feed files holding Event Hub bodies through exactly the Event Hub "
        "function's code path (normalize, index, forward, dead-letter) against the storage in "
        "AzureWebJobsStorage (default: Azurite's development storage). A file that parses as "
        "one JSON value is one body; otherwise each non-blank line is one body.",
    )
    ingest.add_argument("files", nargs="+", type=given_argument, metavar="FILE")
    ingest.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ingest.set_defaults(run=cmd_ingest)

    deadletter = verbs.add_parser(
        "deadletter",
        help="list or replay dead letters",
        description="Dead letters hold what could not be indexed or forwarded, with the reason "
        "and the raw text.",
    )
    deadletter_verbs = deadletter.add_subparsers(dest="action", required=True, parser_class=_Parser)
    kinds = ("rejected", "undelivered", "not-forwarded")
    listing = deadletter_verbs.add_parser(
        "list", help="print dead letters as JSON lines", description="Print dead letters."
    )
    listing.add_argument("--kind", choices=kinds)
    listing.set_defaults(run=cmd_deadletter_list)
    replaying = deadletter_verbs.add_parser(
        "replay",
        help="re-drive dead letters once the cause is fixed",
        description="Re-drive dead letters through the same code path; what now succeeds is "
        "removed, nothing already delivered is duplicated.",
    )
    replaying.add_argument("--kind", choices=kinds)
    replaying.add_argument("--json", action="store_true")
    replaying.set_defaults(run=cmd_deadletter_replay)

    query = verbs.add_parser(
        "query",
        help="search the index",
        description="Search the index; write normalized records newest first, page by page: "
        "JSON lines (the whole record), CSV (the Azure portal's Activity log columns) or a "
        "table. Exit 0; 3 when matching records sit in a blob that cannot be read (named on "
        "standard error: the answer is incomplete); 1 when storage fails; 2 for bad arguments.",
    )
    query.add_argument("--subscription")
    query.add_argument(
        "--since",
        help="ISO 8601 time or relative (15m, 12h, 7d); default: the whole index for a key "
        "lookup (--subscription, --resource, --resource-group, --caller, --correlation-id, "
        "--operation), else 30d",
    )
    query.add_argument("--until", help="ISO 8601 time or relative; default now")
    query.add_argument("--resource", help="resource id (exact, any case)")
    query.add_argument("--resource-group", dest="resource_group", help="any case")
    query.add_argument(
        "--resource-type", dest="resource_type", help="e.g. Microsoft.KeyVault/vaults (any case)"
    )
    query.add_argument("--caller")
    query.add_argument("--correlation-id", dest="correlation_id")
    query.add_argument(
        "--operation", help="operation name, e.g. microsoft.compute/virtualmachines/write"
    )
    query.add_argument("--category")
    query.add_argument("--status", help="Succeeded, Failed, Started, Accepted or any other")
    query.add_argument("--level", help="Critical, Error, Warning, Informational or Verbose")
    query.add_argument(
        "--text", help="a keyword: any case, anywhere in the record's JSON (read, not indexed)"
    )
    query.add_argument(
        "--limit",
        default="100",
        help="at most this many records in all (default 100, up to 10000000); read in pages "
        "of 2500 (query_cli.CLI_PAGE), with progress on standard error",
    )
    query.add_argument(
        "--format",
        choices=("jsonl", "csv", "table", "json"),
        default="jsonl",
        help="jsonl (default; json is the same), csv, or table",
    )
    query.set_defaults(run=cmd_query)

    from shared.tools.verify_cli import add_verify_verb

    add_verify_verb(verbs, cmd_verify)

    backfill = verbs.add_parser(
        "backfill",
        help="index an existing archive container or a local copy of one",
        description="Index every PT1H.json of the archive container (or of a local folder laid "
        "out like it). Resumable and idempotent: it uses the same cursors as the functions.",
    )
    backfill.add_argument(
        "path", nargs="?", type=given_argument, help="a local folder laid out like the container"
    )
    backfill.add_argument(
        "--container", type=given_argument, help="default: the archive container setting"
    )
    backfill.add_argument("--since", type=parse_time_argument)
    backfill.add_argument("--until", type=parse_time_argument)
    backfill.add_argument("--subscription", type=given_argument)
    backfill.add_argument(
        "--parallel", type=whole_number_argument, default=4, help="blobs indexed at once"
    )
    backfill.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object"
    )
    backfill.set_defaults(run=cmd_backfill)

    forward = verbs.add_parser(
        "forward",
        help="send to Log Analytics what a time range holds and it has not accepted",
        description="Read the archive's records of [--since, --until) and send to Log "
        "Analytics, once each, those it has not accepted: records indexed where forwarding "
        "was not configured (a shell without the Logs Ingestion settings, or an app whose "
        "forwarding settings were bad). Needs the app's ACTIVITYLOG_LOGS_INGESTION_* settings "
        "and its Monitoring Metrics Publisher role. Idempotent: run it again after a failure. "
        "Any time the archive can hold (years 0001-9999) is in reach. Exit 0; 3 when records "
        "were not sent for their own sake (refused by Log Analytics: not-forwarded letters, "
        "for `deadletter replay`; or in a blob that cannot be read: `verify` says how); 1 "
        "when it was unavailable; 2 for bad arguments.",
    )
    forward.add_argument("--since", required=True, help="ISO 8601 or 15m, 12h, 7d ago")
    forward.add_argument("--until", help="ISO 8601 or 15m, 12h, 7d ago; default: now")
    forward.add_argument("--json", action="store_true", help="print the summary as JSON")
    forward.set_defaults(run=cmd_forward)

    run = verbs.add_parser(
        "run",
        help="run the whole pipeline locally on a generated day of traffic (or --source DIR)",
        description="Generate a realistic day of Activity Log traffic for several subscriptions, "
        "write it as growing PT1H.json append blobs and as Event Hub batches, drive the app's "
        "own functions (blob trigger, catch-up timer, Event Hub, retention) with the real "
        "azure.functions binding types, and print what was indexed and example queries. "
        "Without AzureWebJobsStorage it starts Azurite itself (data in .azurite/).",
    )
    run.add_argument(
        "--source",
        type=given_argument,
        help="a folder: a downloaded archive container, or Event Hub bodies",
    )
    run.add_argument(
        "--events",
        type=whole_number_argument,
        default=3000,
        help="events to generate (default 3000)",
    )
    run.add_argument(
        "--seed",
        type=whole_number_argument,
        help="fix the generated data (default: from the clock)",
    )
    run.add_argument("--json", action="store_true", help="end with one JSON object of counts")
    run.set_defaults(run=cmd_run)

    retention = verbs.add_parser(
        "retention",
        help="delete what is past its retention (or, with --dry-run, say what would go)",
        description="Run the retention job against AzureWebJobsStorage with the retention "
        "settings (ACTIVITYLOG_RETENTION_DAYS, ACTIVITYLOG_RETENTION_CATEGORY_DAYS): index "
        "rows, archived PT1H.json blobs, cursors and dead letters older than their limit go.",
    )
    retention.add_argument("--dry-run", action="store_true", help="delete nothing; report")
    retention.add_argument(
        "--as-of", type=parse_time_argument, help="judge ages as of this time instead of now"
    )
    retention.add_argument("--json", action="store_true", help="print the run's record as JSON")
    retention.set_defaults(run=cmd_retention)

    compact = verbs.add_parser(
        "compact",
        help="merge closed days' posting rows into per-day runs (what the hourly timer does)",
        description="Merge each closed day's fresh posting rows (those of committed blobs) into "
        "one run sorted by value hash, so a lookup reads about one row a day; days ended less "
        "than three hours before --as-of are left for later. Idempotent; safe beside writers, "
        "lookups and another compaction. Exit 0.",
    )
    compact.add_argument(
        "--as-of", type=parse_time_argument, help="judge which days are closed as of this time"
    )
    compact.add_argument("--json", action="store_true", help="print the run's record as JSON")
    compact.set_defaults(run=cmd_compact)

    serve = verbs.add_parser(
        "serve",
        help="serve the search page and the HTTP API on this machine (no sign-in)",
        description="Serve the app's own HTTP functions (the search page at /api/search, "
        "/api/activity) on loopback, without sign-in, against AzureWebJobsStorage or, when "
        "none is set, Azurite (started with its data in .azurite/, where `run` leaves it). "
        "Prints the page's URL; Ctrl-C stops it.",
    )
    serve.add_argument(
        "--port", type=whole_number_argument, default=7071, help="default 7071; 0: any free port"
    )
    serve.add_argument(
        "--host", type=given_argument, default="127.0.0.1", help="a loopback address only"
    )
    serve.add_argument("--verbose", action="store_true", help="log each request")
    serve.set_defaults(run=cmd_serve)
    return parser


# --- failures that running again cures: one line, exit 1 ---------------------------------

AGAIN = "every verb is idempotent: run it again"
MAX_CAUSE = 200
_HOST = re.compile(r"^HTTPS?Connection(?:Pool)?\(.*?\):\s*")  # urllib3's "HTTPConnection(...): "
_SOCKET = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)|Error\(-?\d+, '([^']+)'\)")


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).splitlines()), "").strip()


def _raised_in_azure_pipeline(error: BaseException) -> bool:
    """Whether the innermost frame of its traceback is azure-core's pipeline (a worker
    thread's frames stay in the traceback of an error re-raised from its future)."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    module = trace.tb_frame.f_globals.get("__name__", "") if trace is not None else ""
    return isinstance(module, str) and module.startswith("azure.core.pipeline")


def _storage_failure(error: BaseException) -> bool:
    """A failure of storage or the network on the way to it, wrapped by the SDK or not (a
    cut-off answer read after the pipeline returned raises requests' or urllib3's own)."""
    import http.client

    import requests
    import urllib3

    transient = (
        AzureError,  # ServiceRequestError, ServiceResponseError, HttpResponseError, ...
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(error, transient):
        return True
    return isinstance(error, AttributeError) and _raised_in_azure_pipeline(error)


def _short_cause(error: BaseException) -> str:
    """`ServiceResponseError: Connection reset by peer`: the type and what the socket said."""
    text = _first_line(error)
    found = _SOCKET.search(text)
    text = (found.group(1) or found.group(2)) if found else _HOST.sub("", text)
    text = text.strip()[:MAX_CAUSE]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_line(error: BaseException) -> str | None:
    """The line a verb ends with when running it again (later) cures its failure; None for
    anything else (a programming error: its traceback is what helps).

    Events another writer holds: the writer's own sentence (which, by what, when to retry).
    Log Analytics or storage unavailable: what failed. A delivery's wrapping is looked through.
    """
    from shared.adapters.forwarding_declaration import ForwardHeld
    from shared.adapters.log_analytics import TransientForwardError
    from shared.services.claims import ClaimedElsewhere
    from shared.services.forwarding import RetryableDeliveryError

    while isinstance(error, RetryableDeliveryError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, ClaimedElsewhere | ForwardHeld):
        return " ".join(str(error).splitlines())  # its own sentence, on one line
    if isinstance(error, TransientForwardError):
        return f"{_first_line(error)}; {AGAIN}"
    if _storage_failure(error):
        return f"storage unavailable ({_short_cause(error)}); {AGAIN}"
    return None


# urllib3 keeps 10 connections a host (requests' default; a pool as wide as the process's
# lanes was tried, and a CI run then met one reset connection under a table batch POST, which
# the SDK does not retry) and says so each time it closes one past that: nothing is lost, and
# there is nothing for the user to do.
_POOL_FULL = "Connection pool is full"


class _VerbLog(logging.Handler):
    """Log records while a verb runs, shown as Python shows them unconfigured (the message,
    and a traceback if any), except what a failure that running again cures explains (and
    the SDK's own warnings): held, shown on one line if the verb ends well, else dropped for
    the line the verb ends with."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "urllib3.connectionpool" and record.msg.startswith(_POOL_FULL):
            return  # a connection closed after its call (more calls at once than kept): noise
        error = record.exc_info[1] if record.exc_info else None
        line = failure_line(error) if error is not None else None
        if line is None and not record.name.startswith("azure."):
            sys.stderr.write(self.format(record) + "\n")
        else:
            self.held.append(record.getMessage() + (f": {line}" if line else ""))

    def show_held(self) -> None:
        for line in self.held:
            sys.stderr.write(f"{line}\n")


@contextmanager
def _verb_log() -> Iterator[_VerbLog]:
    """A verb's log records on standard error, unless logging is configured already."""
    handler, root = _VerbLog(), logging.getLogger()
    if root.handlers:  # a host or a test harness has its own: left to it
        yield handler
        return
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _stdout_closed() -> int:
    """Standard output's reader went away (`| head`): no failure to report; the exit a
    writer SIGPIPE ends has. What is still buffered goes nowhere, not to a second error at
    the interpreter's exit (https://docs.python.org/3/library/signal.html, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verb = " ".join(filter(None, (args.verb, getattr(args, "action", None))))
    with _verb_log() as log:
        try:
            status: int = args.run(args)
        except (UsageError, SettingsError) as error:
            sys.stderr.write(f"{parser.prog} {verb}: {error}\n")
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            return _stdout_closed()
        except Exception as error:
            line = failure_line(error)
            if line is None:
                raise  # a programming error: its traceback is what helps
            sys.stderr.write(f"{parser.prog} {verb}: {line}\n")
            return EXIT_FAILED
        log.show_held()
        return status
