"""The UI's static files (vendored JS, our CSS and JS), served from the package.

Only files that exist in ``static/`` at start-up are served. Pages link them with the
first characters of their sha256 in the query (``static_url``), so a browser may cache
them for a year and still fetches a changed file at once.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from aiohttp import web

from admin_api.routing import PUBLIC, EndpointTable

STATIC_DIR = Path(__file__).parent / "static"
_TEXT = {".js", ".css", ".svg"}
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

endpoints = EndpointTable("ui")


class StaticFiles:
    """Name -> (bytes, content type, version) of every file in ``static/``, read once, and
    the gzip of each text file, compressed once (sent to browsers that accept it)."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        self.gzipped: dict[str, bytes] = {}
        for path in sorted(root.iterdir()):
            if path.is_file() and path.suffix in _TYPES:
                data = path.read_bytes()
                self.files[path.name] = (
                    data,
                    _TYPES[path.suffix],
                    hashlib.sha256(data).hexdigest()[:12],
                )
                if path.suffix in _TEXT:
                    self.gzipped[path.name] = gzip.compress(data, compresslevel=9, mtime=0)

    def url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.files[name][2]}"


STATIC = web.AppKey("ui_static", StaticFiles)


@endpoints.get(
    "/ui/static/{name}",
    permission=PUBLIC,
    response=bytes,
    media_type="application/octet-stream",
    errors=(404,),
)
async def static_file(request: web.Request) -> web.Response:
    """A static file of the UI (scripts, stylesheet, icons)."""
    found = request.app[STATIC].files.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    data, content_type, version = found
    cache = (
        "public, max-age=31536000, immutable" if request.query.get("v") == version else "no-cache"
    )
    headers = {"Cache-Control": cache, "ETag": f'"{version}"', "Vary": "Accept-Encoding"}
    packed = request.app[STATIC].gzipped.get(request.match_info["name"])
    if packed is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
        data = packed
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, content_type=content_type, headers=headers)
