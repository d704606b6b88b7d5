"""The response headers of the viewer's files: a Content-Security-Policy that lets OHIF
run from this origin only (docs/viewer.md, "Headers")."""

from __future__ import annotations

import base64
import hashlib
import re

# inline <script> elements of index.html (OHIF sets window.PUBLIC_URL and an import
# helper inline): allowed by their hashes, not by 'unsafe-inline'
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def inline_hashes(index_html: bytes) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in INLINE_SCRIPT.findall(index_html)
    ]


def content_security_policy(script_hashes: list[str]) -> str:
    """Everything from 'self'. 'wasm-unsafe-eval': the image codecs are WebAssembly.
    Styles: React and OHIF's components set inline styles. blob:/data: images, workers
    and fonts are made in the page, not fetched from elsewhere."""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", "'wasm-unsafe-eval'", *script_hashes],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "frame-src": ["'none'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
