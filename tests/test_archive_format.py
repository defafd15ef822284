"""An archive blob's bytes (shared.core.archive_format): plain gzip, however it was deflated,
so that the standard library, the `gzip` tool and every engine read it whole or by member."""

from __future__ import annotations

import gzip
import subprocess
import zlib

import orjson

from shared.core.archive_format import decode_lines, encode_blob
from shared.core.archive_keys import MEMBER_RECORDS
from shared.core.records import NormalizedRecord


def _records(count: int) -> list[NormalizedRecord]:
    return [
        {
            "EventKey": f"{n:032x}",
            "TimeGenerated": f"2025-03-01T00:{n // 60 % 60:02d}:{n % 60:02d}.0000000Z",
            "Caller": f"user{n % 7}@contoso.com",
            "Properties": {"n": n, "text": "é ünïcode ✓"},
        }
        for n in range(count)
    ]


def test_a_blob_is_plain_gzip_read_whole_by_the_standard_library_and_the_gzip_tool() -> None:
    records = _records(3 * MEMBER_RECORDS + 5)
    blob = encode_blob(records)
    lines = [orjson.dumps(record) for record in records]
    assert gzip.decompress(blob.data).splitlines() == lines
    assert decode_lines(blob.data) == lines
    tool = subprocess.run(["gzip", "-dc"], input=blob.data, capture_output=True, check=True)
    assert tool.stdout.splitlines() == lines


def test_each_member_is_a_gzip_stream_of_its_own_with_time_zero() -> None:
    records = _records(2 * MEMBER_RECORDS + 1)
    blob = encode_blob(records)
    assert blob.offsets[0] == 0 and blob.offsets[-1] == len(blob.data)
    members = [blob.data[a:b] for a, b in zip(blob.offsets, blob.offsets[1:], strict=False)]
    assert len(members) == 3
    for number, member in enumerate(members):
        assert member[:4] == b"\x1f\x8b\x08\x00" and member[4:8] == bytes(4)  # mtime 0
        wanted = records[number * MEMBER_RECORDS : (number + 1) * MEMBER_RECORDS]
        inflated = zlib.decompress(member, wbits=31)
        assert inflated.splitlines() == [orjson.dumps(record) for record in wanted]


def test_the_same_records_make_the_same_bytes() -> None:
    first, again = encode_blob(_records(200)), encode_blob(_records(200))
    assert first.data == again.data and first.sha256 == again.sha256
