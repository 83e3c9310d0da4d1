"""Tell Streamlit's browser client where the server's root is, so a deep link connects
without two 404s.

Streamlit's client does not know the server's base path: on /playground it asks
/playground/_stcore/health and /playground/_stcore/host-config first (both 404, each a
console error, and a retry delay), and only then the parent path /. It skips that guess
when the page defines `window.__streamlit.BACKEND_BASE_URL` before its bundle runs, a
hook meant for hosts that embed Streamlit. `BackendBaseUrl` is an ASGI middleware (for
`st.App`, see server.py) that adds to the served index.html a script setting it to the
URL without its last segment when that segment is one of Layer Lab's pages, so the root
is found behind any path prefix; on any other address the client guesses as before.
"""
from __future__ import annotations

import gzip
import json

from ui.links import PAGES

SCRIPT = ("<script>(function(){var p=location.pathname.replace(/\\/+$/,''),i=p.lastIndexOf('/');"
          "if(!window.__streamlit&&%s.indexOf(p.slice(i+1))>=0)"
          "window.__streamlit={BACKEND_BASE_URL:location.origin+p.slice(0,i)+'/'};})();</script>")


def with_base_url(html: bytes) -> bytes:
    """index.html with the BACKEND_BASE_URL script before its first script (unchanged
    when it has no <script>, or already has ours)."""
    script = (SCRIPT % json.dumps(list(PAGES))).encode()
    if script in html or b"<script" not in html:
        return html
    return html.replace(b"<script", script + b"<script", 1)


class BackendBaseUrl:
    """ASGI middleware: every 200 text/html response gets `with_base_url` (gzip-encoded
    bodies are unpacked and packed again); everything else passes through untouched."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start, chunks = None, []

        async def patched(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                if message["status"] == 200 and headers.get(b"content-type", b"").startswith(b"text/html"):
                    start = message
                    return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            gzipped = any(k.lower() == b"content-encoding" and v.strip() == b"gzip" for k, v in headers)
            body = with_base_url(gzip.decompress(body) if gzipped else body)
            body = gzip.compress(body) if gzipped else body
            await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, patched)
