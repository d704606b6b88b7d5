"""authlib's view of a Starlette request: a parsed form and query, headers, the URI.

authlib's grants are synchronous; `OAuthServer` runs them in a worker thread, so the
body is read and parsed here, on the event loop, before they see it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from starlette.requests import Request

MAX_FORM_BYTES = 256 * 1024  # an assertion is capped at 64 KB; nothing else is large
MAX_FIELDS = 64


class FormTooLarge(ValueError):
    pass


class Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._list: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._list[name].append(value)
        self._data = {name: values[0] for name, values in self._list.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._list


class FormRequest(OAuth2Request):  # type: ignore[misc]
    """An OAuth request whose payload is the query (GET) or the form (POST)."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str],
        query: list[tuple[str, str]], form: list[tuple[str, str]],
    ) -> None:  # fmt: skip
        super().__init__(method, uri, headers=headers)
        self._args = Payload(query).data
        self._form = Payload(form).data
        self.payload = Payload(form if method == "POST" else query)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


async def form_request(request: Request, uri: str) -> FormRequest:
    """`uri` is the endpoint's public URL (never built from the Host header)."""
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge("the form is too large")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise ValueError("the body must be application/x-www-form-urlencoded")
        form = _pairs(body.decode("utf-8", errors="strict"))
    query = _pairs(request.url.query)
    return FormRequest(request.method, uri, request.headers, query, form)


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    return [(name, value) for name, value in pairs]


def first(pairs: Mapping[str, Any], name: str) -> str | None:
    value = pairs.get(name)
    return value if isinstance(value, str) and value else None
