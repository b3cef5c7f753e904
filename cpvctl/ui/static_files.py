"""The page's static files, shipped as package data in ``cpvctl/ui/static`` (no CDN, no
build step). Only the names listed here are served: nothing is looked up from the URL."""

from __future__ import annotations

from importlib import resources

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
#: URL path -> file name under static/
ROUTES = {
    "/": "index.html",
    "/static/app.js": "app.js",
    "/static/views.js": "views.js",
    "/static/plot.js": "plot.js",
    "/static/style.css": "style.css",
}


def static_file(path: str) -> tuple[str, bytes] | None:
    """(content type, bytes) for a served path, or None."""
    name = ROUTES.get(path)
    if name is None:
        return None
    data = resources.files("cpvctl.ui").joinpath("static", name).read_bytes()
    return TYPES[name[name.rfind(".") :]], data
