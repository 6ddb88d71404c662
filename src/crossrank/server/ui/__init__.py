"""The ``/ui`` playground: a static page (HTML, JS, CSS shipped in this folder) that calls the rerank API.

The page holds no data, so it loads without a key; every call it makes goes to the same protected routes
with the key the user typed (kept in the tab's ``sessionStorage``). ``crossrank serve --no-ui`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

__all__ = ["UI_ROUTES", "router"]

# Path -> (file in this package, media type). Relative links in the page ("ui/app.js", "v2/rerank") resolve
# from /ui, so the page also works behind a proxy that serves the API under a prefix.
_ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
}
UI_ROUTES = frozenset(_ASSETS)

# Self only: no inline script or style, no other origin, not framed (clickjacking), no form posts elsewhere.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate, so a page from an older crossrank is not kept after an upgrade.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _serve(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    body = files(__name__).joinpath(name).read_bytes()

    async def asset() -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return asset


for _path, (_name, _media_type) in _ASSETS.items():
    router.add_api_route(_path, _serve(_name, _media_type), methods=["GET"])
