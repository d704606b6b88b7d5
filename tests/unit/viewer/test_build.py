"""viewer/build.py: the rewrites that move OHIF's build from / to /viewer/, on a small
build made here, and on the installed one where ./run installed it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from viewer.build import CHECKED_MARKER, DEFAULT_DIST, Build, BuildChanged

INDEX = (
    '<!doctype html><html><head><meta name="msapplication-TileImage" content="/assets/t.png">'
    '<meta name="msapplication-config" content="/assets/b.xml">'
    '<script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
    + '<link rel="icon" href="/assets/i.png">'
    * 28
    + '<script rel="preload" as="script" src="/app-config.js"></script>'
    '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
    '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.1.js"></script></head><body></body></html>'
)
BUNDLE = (
    '(() => {\n__webpack_require__.p = "/";\n})();\n'
    "browserImportFunction('/dicom-microscopy-viewer/x.js')"
)


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "app.bundle.1.js").write_text(BUNDLE)
    (tmp_path / "7071.bundle.2.js").write_text('u = "https://cdn.jsdelivr.net/npm/@itk-wasm/x"')
    (tmp_path / "app.bundle.css").write_text("@font-face{src:url(/f.woff2)}")
    (tmp_path / "plain.js").write_text("console.log(1)")
    icons = ",".join(['{"src": "/assets/i.png"}'] * 9)
    (tmp_path / "manifest.json").write_text(f'{{"icons": [{icons}]}}')
    (tmp_path / "sw.js").write_text("importScripts('https://storage.googleapis.com/x')")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "i.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden").write_text("no")
    return tmp_path


def test_index_names_everything_under_the_base_and_loads_no_service_worker(dist: Path) -> None:
    html = Build(dist, "/viewer").content("index.html")
    assert html is not None
    text = html.decode()
    assert 'window.PUBLIC_URL="/viewer/"' in text
    assert 'src="/viewer/app-config.js"' in text
    assert 'href="/viewer/assets/i.png"' in text
    assert 'content="/viewer/assets/t.png"' in text
    assert "init-service-worker" not in text
    assert 'href="/' not in text.replace('href="/viewer/', "")
    assert 'src="/' not in text.replace('src="/viewer/', "")


def test_bundles_load_chunks_from_the_base_and_nothing_from_a_cdn(dist: Path) -> None:
    build = Build(dist, "/viewer")
    bundle = build.content("app.bundle.1.js")
    assert bundle is not None
    assert b'__webpack_require__.p = "/viewer/";' in bundle
    assert b"browserImportFunction('/viewer/dicom-microscopy-viewer/" in bundle
    interpolation = build.content("7071.bundle.2.js")
    assert interpolation == b'u = "/viewer/offline/@itk-wasm/x"'
    assert build.content("app.bundle.css") == b"@font-face{src:url(/viewer/f.woff2)}"
    manifest = build.content("manifest.json")
    assert manifest is not None
    assert manifest.count(b'"src": "/viewer/assets/i.png"') == 9
    # a bundle none of the rewrites changes is served from disk as it is
    assert build.content("plain.js") is None


def test_a_changed_build_is_refused_not_served_from_the_root(dist: Path) -> None:
    (dist / "index.html").write_text(INDEX.replace('window.PUBLIC_URL="/"', "", 1))
    with pytest.raises(BuildChanged, match="PUBLIC_URL"):
        Build(dist, "/viewer").content("index.html")
    (dist / "index.html").write_text(INDEX)
    (dist / "app.bundle.1.js").write_text("no public path here")
    with pytest.raises(BuildChanged, match="webpack_require"):
        Build(dist, "/viewer").check()


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("index.html", True),
        ("assets/i.png", True),
        ("../index.html", False),
        ("assets/../../x", False),
        (".hidden", False),
        ("sw.js", False),  # dropped: loads workbox from a CDN
        ("assets\\i.png", False),
        ("missing.js", False),
        ("", False),
    ],
)
def test_only_files_inside_the_build_are_served(dist: Path, path: str, served: bool) -> None:
    assert (Build(dist, "/viewer").locate(path) is not None) is served


def test_a_symlink_out_of_the_build_is_not_followed(
    dist: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text("not the viewer's")
    (dist / "link.txt").symlink_to(secret)
    assert Build(dist, "/viewer").locate("link.txt") is None


def test_the_installed_build_is_the_one_the_rewrites_know() -> None:
    if not (DEFAULT_DIST / "index.html").is_file():
        pytest.fail(f"the viewer is not installed at {DEFAULT_DIST}: ./run test installs it")
    Build(DEFAULT_DIST, "/viewer").check()


def test_a_build_found_good_is_remembered_until_a_file_changes(dist: Path) -> None:
    Build(dist, "/viewer").check()
    assert (dist / CHECKED_MARKER).is_file()
    assert Build(dist, "/viewer").locate(CHECKED_MARKER) is None  # hidden: never served
    # the stamp (names, sizes, times) matches: the bundles are not read again, so a
    # same-size edit that keeps the file's time goes unseen (npm never does that)
    bundle = dist / "app.bundle.1.js"
    status = bundle.stat()
    bundle.write_text("x" * status.st_size)
    os.utime(bundle, ns=(status.st_atime_ns, status.st_mtime_ns))
    Build(dist, "/viewer").check()
    bundle.write_text("no public path here, and another size")
    with pytest.raises(BuildChanged, match="webpack_require"):
        Build(dist, "/viewer").check()
