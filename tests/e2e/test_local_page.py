"""``cpvctl ui --no-browser`` against the real daemon (issue 17): the printed address, the
token refusal with nothing from the registry in the answer, the page and API data with the
right token, paging, and a ``<script>`` metric name arriving as JSON text, not markup."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch
from tests.e2e.ui_support import XSS_METRIC, push_versions, running_ui

A = "page/model"


def get(port: int, target: str, cookie: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", target, headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_cpvctl_ui_serves_the_page_and_data_only_with_its_token(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(watches=[Watch(short_tmp / "w", A, layout=None)])
    with d:
        metrics = [{"loss": 0.5}, {"loss": 0.25, XSS_METRIC: 1}, {"loss": 0.125}]
        assert push_versions(d, A, metrics, short_tmp / "w") == ["v1.0.0", "v1.1.0", "v1.2.0"]
        with running_ui(d.socket) as ui:
            for target in ("/", f"/v1/versions?artifact={A}", "/v1/artifacts", "/v1/events"):
                status, _, body = get(ui.port, target)
                assert status == 401, target
                assert A.encode() not in body and b"v1.0.0" not in body
                sep = "&" if "?" in target else "?"
                status, _, body = get(ui.port, f"{target}{sep}token=wrong-{ui.token[:8]}")
                assert status == 403, target
                assert A.encode() not in body and b"v1.0.0" not in body

            status, headers, _ = get(ui.port, "/?token=" + ui.token)
            assert status == 303
            cookie = headers["set-cookie"].split(";")[0]
            status, _, page = get(ui.port, "/", cookie)
            assert status == 200 and b'src="/static/app.js"' in page

            status, _, body = get(ui.port, "/v1/artifacts", cookie)
            (art,) = [a for a in json.loads(body) if a["name"] == A]
            assert (art["latest"], art["count"]) == ("v1.2.0", 3)
            assert art["bytes"] == sum(v["size"] for v in d.client().versions(A))

            target = f"/v1/versions?artifact={A}&offset=1&limit=1&sort=metric:loss&order=asc"
            status, headers, body = get(ui.port, target, cookie)
            assert status == 200 and headers["x-cpv-total"] == "3"
            (row,) = json.loads(body)
            assert row["version"] == "v1.1.0"
            # the registry's text travels as JSON data; the page sets it as textContent
            assert row["metrics"][XSS_METRIC] == 1
            assert headers["content-type"].startswith("application/json")
            assert "script-src 'self'" in headers["content-security-policy"]

            status, _, body = get(ui.port, f"/v1/versions?artifact={A}&limit=0", cookie)
            assert status == 400 and b"limit must be" in body
