"""The search page's static files (index.html, app.js, app.css), shipped with the app.

functions/search_http.py serves them. Only the names in FILES exist: a request names one of
them or gets a 404, so no path from a request ever reaches the file system. Each file is read
once per worker and kept, with the ETag of its bytes (a browser revalidates with it).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGE = "index.html"
# Every file the page is made of, with its media type: the allow-list of what is served.
FILES = {
    PAGE: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
ASSETS = tuple(name for name in FILES if name != PAGE)  # served under search/assets/{name}


@dataclass(frozen=True, slots=True)
class WebFile:
    body: bytes
    media_type: str
    etag: str  # a strong validator: the bytes' SHA-256, quoted


def web_file(name: str) -> WebFile | None:
    """The allowed file of this name, or None for any other name."""
    # Checked before the cache: names from requests never become cache entries.
    return _read(name) if name in FILES else None


@functools.cache
def _read(name: str) -> WebFile:
    body = (HERE / name).read_bytes()
    return WebFile(body, FILES[name], f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def total_size() -> int:
    """Bytes of the page's own code and assets, uncompressed (a target: at most 300 KB)."""
    return sum((HERE / name).stat().st_size for name in FILES)
