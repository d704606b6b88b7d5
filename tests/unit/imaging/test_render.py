"""/rendered and /thumbnail decode whatever /frames serves: every pydicom sample whose
first frame /frames returns also renders, in every transfer syntax (issue 11: a Deflated
Explicit VR Little Endian instance answered 422 on /rendered while /frames/1 worked)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from access.errors import AccessError
from imaging.dicomweb.render import frames, rendered
from imaging.parse import Limits, parse
from tests.support.dicom import sample_path


def _served() -> list[Path]:
    """The samples that are stored (parse accepts them) and whose frame 1 /frames serves."""
    served = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(sample_path("CT_small.dcm").parent.glob("*.dcm")):
            data = path.read_bytes()
            try:
                parse(data, Limits())
                frames(data, [1])
            except Exception:  # noqa: S112 - not stored, or no frame served: not in scope
                continue
            served.append(path)
    return served


SERVED = _served()


def test_every_transfer_syntax_is_covered() -> None:
    syntaxes = {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in SERVED
    }
    assert "1.2.840.10008.1.2.1.99" in syntaxes  # deflated
    assert len(syntaxes) >= 10


@pytest.mark.parametrize("path", SERVED, ids=[p.name for p in SERVED])
def test_what_frames_serves_renders(path: Path) -> None:
    data = path.read_bytes()
    for thumbnail in (False, True):
        try:
            image = rendered(data, "image/png", thumbnail=thumbnail)
        except AccessError as error:  # pragma: no cover - the failure this test is about
            pytest.fail(f"{path.name}: {error.code} {error.diagnostics}")
        opened = Image.open(io.BytesIO(image))
        assert opened.format == "PNG"
        if thumbnail:
            assert max(opened.size) <= 128
