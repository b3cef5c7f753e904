"""Posts a webhook: the event JSON, ``X-Cpv-Event-Id`` (the same at every retry),
``X-Cpv-Event``, and ``X-Cpv-Signature: sha256=<hex HMAC-SHA256 of the body>`` when the hook
names a ``secret_env``. Redirects are not followed (a 301 is a failure saying where to
point the hook): a signed event must not be replayed to a host the user never named. https
uses the system CA store (``ssl.create_default_context``). Errors name the URL only as
:func:`cpvd.hooks.model.redact_url` shows it: a webhook URL's path is often its secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import ssl
import time

import aiohttp

from cpvctl.protocol import CPV_VERSION
from cpvd.hooks.attempt import Attempt, tail
from cpvd.hooks.event import HookEvent
from cpvd.hooks.model import HookConfig, redact_url

MAX_ANSWER = 4096


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def headers_for(hook: HookConfig, event: HookEvent, body: bytes) -> dict[str, str]:
    """The request headers; raises LookupError when the secret's variable is not set."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"cpvd/{CPV_VERSION}",
        "X-Cpv-Event-Id": event.id,
        "X-Cpv-Event": event.type,
    }
    if hook.secret_env is not None:
        secret = os.environ.get(hook.secret_env)
        if not secret:
            raise LookupError(
                f"secret_env {hook.secret_env} is not set in cpvd's environment "
                "(set it in the service's environment, then restart cpvd)"
            )
        headers["X-Cpv-Signature"] = signature(secret.encode(), body)
    return headers


def client_session() -> aiohttp.ClientSession:
    """One session for every webhook; TLS verified against the system CA store."""
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(), limit=32)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


async def post(session: aiohttp.ClientSession, hook: HookConfig, event: HookEvent) -> Attempt:
    assert hook.url is not None
    started = time.monotonic()
    shown = redact_url(hook.url)

    def done(ok: bool, detail: str) -> Attempt:
        return Attempt(ok, detail, time.monotonic() - started)

    body = event.body()
    try:
        headers = headers_for(hook, event, body)
    except LookupError as exc:
        return done(False, str(exc))
    try:
        async with session.post(
            hook.url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=hook.timeout),
        ) as resp:
            answer = await resp.content.read(MAX_ANSWER)
            return done(*_judge(resp.status, resp.headers.get("Location"), answer, shown))
    except TimeoutError:
        return done(False, f"{shown} did not answer within {hook.timeout:g}s")
    except aiohttp.ClientConnectorError as exc:
        return done(False, f"cannot connect to {shown}: {exc.os_error.strerror or exc.os_error}")
    except (aiohttp.ClientError, OSError) as exc:
        return done(False, f"{shown}: {type(exc).__name__}")


def _judge(status: int, location: str | None, answer: bytes, shown: str) -> tuple[bool, str]:
    if 200 <= status < 300:
        return True, f"HTTP {status}"
    if 300 <= status < 400:
        where = f" to {redact_url(location)}" if location else ""
        return False, (
            f"{shown} answered HTTP {status} (redirect{where} not followed: "
            "set url to the final address)"
        )
    text = tail(answer)
    return False, f"{shown} answered HTTP {status}" + (f": {text}" if text else "")
