"""The web console's files, served by the HTTP door from memory.

The console is three files shipped in the package (`kvd/doors/console/`, package data): the
page, its stylesheet and its script, with no build step and nothing fetched from elsewhere. They
are read once, on first use, and only those three names are served: the name is a key of a
fixed table, never joined to a path, so no request reaches another file (`..`, `%2e%2e`,
absolute paths all miss the table and get 404).

Every file goes out with a Content-Security-Policy that lets the page run only its own script
and style (no inline script: a key or value that smuggles markup in cannot run), talk to its
own node only (`connect-src 'self'`: members' digests and HTTP doors come through our node's
/v1/members, from their heartbeats), and never be framed.
"""

from __future__ import annotations

from pathlib import Path

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = [("content-security-policy", CSP), ("x-content-type-options", "nosniff"),
           ("cache-control", "no-cache")]  # revalidate: a node upgraded serves its new files

_DIR = Path(__file__).resolve().parent / "console"
_FILES = {  # the URL's name -> (the file, its content type)
    b"/": ("index.html", "text/html; charset=utf-8"),
    b"/console/index.html": ("index.html", "text/html; charset=utf-8"),
    b"/console/console.css": ("console.css", "text/css; charset=utf-8"),
    b"/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
}
_cache: dict[str, bytes] = {}


def is_console(path: bytes) -> bool:
    return path == b"/" or path.startswith(b"/console/")


def lookup(path: bytes) -> tuple[bytes, str] | None:
    """The body and content type of a console path, or None when it names no console file."""
    entry = _FILES.get(path)
    if entry is None:
        return None
    name, kind = entry
    if name not in _cache:
        _cache[name] = (_DIR / name).read_bytes()
    return _cache[name], kind
