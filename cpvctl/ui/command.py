"""``cpvctl ui``: start the local page's server, print its address, open a browser."""

from __future__ import annotations

import argparse
import sys
import threading
import webbrowser

from cpvctl.client import Client
from cpvctl.errors import DaemonUnreachable
from cpvctl.ui.server import start


def open_browser(url: str) -> bool:
    """Open ``url`` when a browser is at hand (not over plain SSH, not in a container)."""
    try:
        return webbrowser.get().open(url)
    except webbrowser.Error:
        return False


def cmd_ui(args: argparse.Namespace, client: Client) -> int:
    try:
        client.check_api()
    except DaemonUnreachable as exc:  # the page waits for it and says so
        print(f"cpvctl ui: {exc.message} (the page reconnects when it starts)", file=sys.stderr)
    server = start(client.socket_path, args.port, client.timeout)
    try:
        url = server.url()
        print(f"The CPV page is at {url}", flush=True)
        print(f"Over SSH: ssh -L {server.port}:127.0.0.1:{server.port} HOST, then open it "
              "locally. Ctrl-C stops it.", flush=True)
        if not args.no_browser:
            open_browser(url)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0
