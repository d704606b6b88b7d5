"""viewer/site.py over ASGI (httpx's ASGI transport): deep links, the generated config,
the headers, and the page shown where the viewer is not installed."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from tests.unit.viewer.test_build import BUNDLE, INDEX
from viewer.build import Build
from viewer.config import ViewerConfig
from viewer.site import ViewerSite


def app_of(dist: Path) -> Starlette:
    def config() -> ViewerConfig:
        return ViewerConfig("http://127.0.0.1:9", "/viewer", "/dicomweb", "/fhir", "/auth", "v")

    site = ViewerSite(Build(dist, "/viewer"), config)
    return Starlette(routes=[Route(p, e, methods=m) for p, e, m in site.routes()])


def client(dist: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app_of(dist)), base_url="http://t")


async def test_deep_links_get_the_app_and_missing_files_a_404(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "app.bundle.1.js").write_text(BUNDLE)
    (tmp_path / "a.wasm").write_bytes(b"\x00asm")
    async with client(tmp_path) as http:
        deep = await http.get("/viewer/viewer", params={"StudyInstanceUIDs": "1.2.3"})
        assert deep.status_code == 200
        assert 'window.PUBLIC_URL="/viewer/"' in deep.text
        assert (await http.get("/viewer/callback")).text == deep.text
        assert (await http.get("/viewer/nothing.js")).status_code == 404
        wasm = await http.get("/viewer/a.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        config = await http.get("/viewer/app-config.js")
        assert config.headers["content-type"].startswith("text/javascript")
        assert '"qidoRoot": "http://127.0.0.1:9/dicomweb"' in config.text
        root = await http.get("/viewer")
        assert root.status_code == 308
        assert root.headers["location"] == "/viewer/"


async def test_the_policy_allows_this_origin_and_the_two_inline_scripts_only(
    tmp_path: Path,
) -> None:
    (tmp_path / "index.html").write_text(INDEX)
    async with client(tmp_path) as http:
        page = await http.get("/viewer/")
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    script = policy["script-src"].split()
    assert "'unsafe-inline'" not in script
    assert "'unsafe-eval'" not in script
    assert "'wasm-unsafe-eval'" in script
    assert len([s for s in script if s.startswith("'sha256-")]) == 2
    assert page.headers["x-frame-options"] == "DENY"


async def test_without_the_build_a_page_says_how_to_install_it(tmp_path: Path) -> None:
    async with client(tmp_path / "not-installed") as http:
        for path in ("/viewer/", "/viewer/viewer", "/viewer/app-config.js"):
            answer = await http.get(path)
            assert answer.status_code == 503
            assert answer.headers["content-type"].startswith("text/html")
            assert "npm" in answer.text
            assert "./run serve" in answer.text


async def test_a_viewer_whose_client_could_not_be_registered_says_why(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "app.bundle.1.js").write_text(BUNDLE)
    site = ViewerSite(Build(tmp_path, "/viewer"), lambda: ViewerConfig(
        "http://0.0.0.0:9", "/viewer", "/dicomweb", "/fhir", "/auth", "v"))  # fmt: skip
    site.unavailable = "redirect URI 'http://0.0.0.0:9/viewer/callback': https"
    app = Starlette(routes=[Route(p, e, methods=m) for p, e, m in site.routes()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for path in ("/viewer/", "/viewer/viewer", "/viewer/app-config.js"):
            answer = await http.get(path)
            assert answer.status_code == 503
            assert "the image viewer is off" in answer.text
            assert "https" in answer.text
