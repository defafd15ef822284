"""Run rows of compacted postings (shared.core.runs): a frequent value's rows newest first."""

from __future__ import annotations

import random
from datetime import date

from shared.core.archive_keys import BlobRef, pack_entries
from shared.core.runs import (
    Postings,
    ends_past,
    lookup_low,
    pack_run,
    places_in_run,
    row_second,
    seek_low,
)

DAY = date(2024, 2, 12)
RUN = 12345
FREQUENT = bytes.fromhex("7a0000000001")
RARE = (bytes.fromhex("110000000001"), bytes.fromhex("7b0000000001"))


def _postings() -> tuple[Postings, set[tuple[BlobRef, tuple[int, int]]]]:
    """A frequent value in three blobs whose times interleave (as blobs of several writers
    or categories do), and two rare values around it."""
    chance = random.Random(7)
    refs = [BlobRef(DAY, "administrative", n) for n in (3, 1, 2)]
    places: dict[BlobRef, list[tuple[int, int]]] = {ref: [] for ref in refs}
    for ordinal in range(3_000):
        places[refs[ordinal % 3]].append((chance.randrange(86_400), ordinal // 3))
    postings: Postings = {FREQUENT: {}}
    for ref, held in places.items():
        chance.shuffle(held)  # a blob's entries may come in any order (pieces of an old run)
        postings[FREQUENT][ref] = pack_entries(held)
    for digest in RARE:
        postings[digest] = {refs[0]: pack_entries([(5, 1), (9, 2)])}
    every = {(ref, place) for ref, held in places.items() for place in held}
    return postings, every


def _value_rows(rows: list[tuple[str, bytes]], digest: bytes) -> list[tuple[str, list[int]]]:
    """The rows a lookup of `digest` reads, in RowKey order, with the seconds of its places."""
    low = lookup_low(RUN, digest)
    found = []
    for key, packed in sorted(rows):
        if key < low:
            continue
        seconds = [s for _, held in places_in_run(packed, DAY, digest) for s, _ in held]
        found.append((key, seconds))
        if ends_past(key, digest):
            break
    return found


def test_a_frequent_values_rows_hold_its_places_newest_first_each_keyed_by_its_last() -> None:
    postings, every = _postings()
    rows = [(row.row_key, row.packed) for row in pack_run(RUN, postings)]
    read = _value_rows(rows, FREQUENT)
    assert len(read) > 5  # the value spans rows
    seconds = [second for _, held in read for second in held]
    assert seconds == sorted(seconds, reverse=True)  # newest first, across blobs
    got = {
        (ref, place)
        for key, packed in rows
        for ref, held in places_in_run(packed, DAY, FREQUENT)
        for place in held
    }
    assert got == every  # each place once
    for key, held in read:
        marked = row_second(key, FREQUENT)
        if ends_past(key, FREQUENT):
            assert marked is None  # its tail, in a row another value (or the end) names
        else:
            assert marked == held[-1], key  # the second of the row's last place
    for digest in RARE:  # a value that fits a row keeps the plain RowKey
        assert all(row_second(key, digest) is None for key, _ in _value_rows(rows, digest))


def test_a_seek_to_a_second_skips_only_rows_of_newer_places() -> None:
    postings, _ = _postings()
    rows = sorted((row.row_key, row.packed) for row in pack_run(RUN, postings))
    read = _value_rows(rows, FREQUENT)
    everything = sorted((s for _, held in read for s in held), reverse=True)
    for second in (86_399, 60_000, 43_200, 1_000, 0):
        low = seek_low(RUN, FREQUENT, second)
        after = [
            s
            for key, packed in rows
            if key >= low
            for _, held in places_in_run(packed, DAY, FREQUENT)
            for s, _ in held
        ]
        assert sorted(s for s in after if s <= second) == sorted(
            s for s in everything if s <= second
        ), second
