"""Bytes -> a checked DICOM instance: Part 10 parse without pixel data, under safety caps.

Everything a header can do to hurt us is bounded here: total size, inflated size and
ratio of deflated transfer syntaxes, sequence nesting depth, element lengths that run
past the data, and UIDs that are not UIDs. A failure is a `AccessError` with an MB-3xxx
code whose DIMSE status becomes the STOW/C-STORE failure reason.
"""

from __future__ import annotations

import io
import json
import struct
import unicodedata
import warnings
import zlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, cast

import orjson
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from access.errors import AccessError
from imaging.pixel_checks import PixelHeader, check_pixel_data
from imaging.scan import SLOW, Scan, converts_plainly, plain_value, read_undefined_sequence, scan
from imaging.uids import is_uid
from mappings.dicom.dose import dose_values

PIXEL_DATA = "7FE00010"
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
BULK_THRESHOLD = 64 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
ROWS, BITS_ALLOCATED, PIXEL_REPRESENTATION = 0x00280010, 0x00280100, 0x00280103
PATIENT_ID, ISSUER_OF_PATIENT_ID = 0x00100020, 0x00100021
PROCEDURE_CODE_SEQUENCE, CONTENT_SEQUENCE = 0x00081032, 0x0040A730
# what converting an element may consult: character set, and for ambiguous VRs (US or
# SS, OB or OW, US or OW) pixel representation, waveform bits and the LUT descriptor
_CONTEXT = (0x00080005, PIXEL_REPRESENTATION, 0x54001004, 0x00283002)
# Rows, Columns, SamplesPerPixel, BitsAllocated, NumberOfFrames, PhotometricInterpretation
PIXEL_HEADER_TAGS = (0x00280010, 0x00280011, 0x00280002, 0x00280100, 0x00280008, 0x00280004)
_REQUIRED_TAGS = (0x0020000D, 0x0020000E, 0x00080018, 0x00080016)  # as REQUIRED_UIDS


@dataclass(frozen=True, slots=True)
class Limits:
    max_instance_bytes: int = 512 * 1024 * 1024
    max_inflated_bytes: int = 512 * 1024 * 1024
    max_inflate_ratio: int = 200
    max_depth: int = 16


@dataclass(slots=True)
class ParsedInstance:
    """What the index and the FHIR link need from one instance."""

    study: str
    series: str
    sop: str
    sop_class: str
    transfer_syntax: str
    patient_key: str  # IssuerOfPatientID|PatientID: a study belongs to one patient
    study_attrs: dict[str, Any] = field(default_factory=dict)
    series_attrs: dict[str, Any] = field(default_factory=dict)
    instance_attrs: dict[str, Any] = field(default_factory=dict)
    metadata: bytes = b""  # DICOM JSON (PS3.18 F.2), BulkDataURIs relative to the base
    dose: dict[str, float] = field(default_factory=dict)  # Radiation Dose SR measures


@cache
def qido_attributes() -> dict[str, Any]:
    text = (resources.files("imaging") / "qido_attributes.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def parse(data: bytes, limits: Limits, with_metadata: bool = False) -> ParsedInstance:
    """Parse and check one Part 10 instance; raises AccessError(MB-3xxx) when unacceptable.

    The full DICOM JSON costs more than the rest of ingest together, so it is made on
    request (`with_metadata`, or `metadata_of` later) and cached in the index.
    """
    # tolerant on intake: odd values are stored as received, pydicom's warnings are noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parse(data, limits, with_metadata)


def metadata_of(data: bytes) -> bytes:
    """The instance's DICOM JSON (PS3.18 F.2), bulk data as relative BulkDataURIs."""
    return parse(data, Limits(max_instance_bytes=len(data) + 1), with_metadata=True).metadata


def _parse(data: bytes, limits: Limits, with_metadata: bool) -> ParsedInstance:
    if len(data) > limits.max_instance_bytes:
        raise AccessError("MB-3003", f"instance of {len(data)} bytes over the limit")
    if not with_metadata:
        try:
            parsed = _parse_scanned(data, limits)
        except Exception:  # anything odd on the lean path: pydicom's answer is the answer
            parsed = None
        if parsed is not None:
            return parsed
    return _parse_reference(data, limits, with_metadata)


def _parse_scanned(data: bytes, limits: Limits) -> ParsedInstance | None:
    """The lean path (imaging.scan): a result equal to pydicom's, or None to ask pydicom.

    It only ever accepts: every refusal, and every instance it cannot frame exactly, goes
    to `_parse_reference`, so error codes are pydicom's by construction.
    """
    found = scan(data, limits.max_depth)
    if found is None or CONTENT_SEQUENCE in found.elements:
        return None  # a dose report's content tree is walked on the pydicom path
    if found.implicit and found.codec is None:
        return None  # text in other character sets: pydicom converts all of it
    values = _Values(data, found)
    if found.pixel_offset is not None:
        _check_pixel_tail(data, found.pixel_offset, found.transfer_syntax)
    elif ROWS in found.elements and BITS_ALLOCATED in found.elements:
        return None  # an image without pixel data: truncated, refused by the reference
    if values.converted:
        _check_structure(values.dataset(), limits.max_depth)
    uids = [values.get(tag) for tag in _REQUIRED_TAGS]
    if not all(value is not None and is_uid(str(value)) for value in uids):
        return None
    study, series, sop, sop_class = (str(value) for value in uids)
    if found.pixel_offset is None and "Image Storage" in UID(sop_class).name:
        return None
    _check_media_storage(_meta_uid(data, found, 0x00020002), _meta_uid(data, found, 0x00020003),
                         sop_class, sop)  # fmt: skip
    if found.pixel_offset is not None:
        check_pixel_data(data, found.pixel_offset, found.transfer_syntax, PixelHeader(
            *(values.get(tag) for tag in PIXEL_HEADER_TAGS)))  # fmt: skip
    attrs = qido_attributes()
    parsed = ParsedInstance(
        study=study,
        series=series,
        sop=sop,
        sop_class=sop_class,
        transfer_syntax=found.transfer_syntax,
        patient_key=f"{_text(values.get(ISSUER_OF_PATIENT_ID, True))}"
        f"|{_text(values.get(PATIENT_ID, True))}",
        study_attrs=values.scalars(attrs["study"]),
        series_attrs=values.scalars(attrs["series"]),
        instance_attrs=values.scalars(attrs["instance"]),
    )
    if PROCEDURE_CODE_SEQUENCE in found.elements:
        procedure = _first_code(values.holding(PROCEDURE_CODE_SEQUENCE), "ProcedureCodeSequence")
        if procedure:
            parsed.study_attrs["ProcedureCode"] = procedure
    return parsed


class _Values:
    """Element values of a scanned instance: converted directly when plain, else by
    pydicom on a small Dataset of the raw elements it needs (with the character set,
    pixel representation and private creators that conversion consults).

    `converted`: the elements the reference's structure check converts and that can
    fail: UN elements; for implicit VR sequences and every element that does not
    convert plainly (explicit VR sequences were framed and checked by the walk).
    """

    def __init__(self, data: bytes, found: Scan) -> None:
        self.data, self.found = data, found
        elements = found.elements.items()
        if found.implicit:
            self.converted = [t for t, e in elements if not converts_plainly(data, e)]
        else:
            self.converted = [t for t, e in elements if e[0] == "UN"]
        self._dataset: Dataset | None = None

    def _raw(self, tag: int) -> RawDataElement | DataElement:
        vr, length, start = self.found.elements[tag]
        if vr == "SQ" and length == UNDEFINED_LENGTH:
            return read_undefined_sequence(self.data, tag, self.found)
        implicit = self.found.implicit
        read_vr = None if implicit else vr
        value: bytes | None = self.data[start : start + length]
        if not length:
            value = cast(bytes | None, empty_value_for_VR(read_vr, raw=True))  # as pydicom
        return RawDataElement(BaseTag(tag), read_vr, length, value, start, implicit, True)

    def dataset(self) -> Dataset:
        if self._dataset is None:
            present = self.found.elements
            tags = [t for t in _CONTEXT if t in present]
            for tag in self.converted:
                creator = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
                if tag >> 16 & 1 and creator in present:
                    tags.append(creator)
                tags.append(tag)
            raws: dict[BaseTag, DataElement | RawDataElement] = {
                BaseTag(tag): self._raw(tag) for tag in sorted(set(tags))
            }
            dataset = Dataset(raws)
            dataset.set_original_encoding(False, True, dataset._character_set)
            self._dataset = dataset
        return self._dataset

    def get(self, tag: int, text: bool = False) -> Any:
        """The element's value, None when absent; `text`: only a str is taken directly."""
        element = self.found.elements.get(tag)
        if element is None:
            return None
        converted = plain_value(self.data, element, self.found.codec)
        if converted is SLOW or (text and not isinstance(converted, str)):
            return self.holding(tag)[tag].value
        return converted

    def holding(self, tag: int) -> Dataset:
        """The small Dataset, with element `tag` in it for pydicom to convert."""
        dataset = self.dataset()
        if tag not in dataset._dict:
            dataset[BaseTag(tag)] = self._raw(tag)
        return dataset

    def scalars(self, keywords: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        present = self.found.elements
        for keyword, tag in _tags(tuple(keywords)):
            if tag not in present or keyword == "IssuerOfAccessionNumberSequence":
                continue
            scalar = _scalar(self.get(tag))
            if scalar is not None:
                out[keyword] = scalar
        return out


def _parse_reference(data: bytes, limits: Limits, with_metadata: bool) -> ParsedInstance:
    """pydicom's full read (dcmread), the path of every instance the lean path declines."""
    if len(data) > limits.max_instance_bytes:
        raise AccessError("MB-3003", f"instance of {len(data)} bytes over the limit")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise AccessError("MB-3001", "no DICOM Part 10 preamble (DICM at offset 128)")
    dataset, has_pixels = _read(data, limits)
    _check_structure(dataset, limits.max_depth)
    uids = {keyword: dataset.get(keyword) for keyword in REQUIRED_UIDS}
    for keyword, value in uids.items():
        if not is_uid(str(value) if value is not None else None):
            raise AccessError(
                "MB-3002", f"{keyword} missing or not a valid UID", expression=keyword
            )
    study, series, sop = (str(uids[k]) for k in REQUIRED_UIDS[:3])
    meta = dataset.file_meta
    _check_media_storage(
        meta.get("MediaStorageSOPClassUID"), meta.get("MediaStorageSOPInstanceUID"),
        str(uids["SOPClassUID"]), sop,
    )  # fmt: skip
    transfer_syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    attrs = qido_attributes()
    parsed = ParsedInstance(
        study=study,
        series=series,
        sop=sop,
        sop_class=str(uids["SOPClassUID"]),
        transfer_syntax=transfer_syntax,
        patient_key=f"{_text(dataset.get('IssuerOfPatientID'))}|{_text(dataset.get('PatientID'))}",
        study_attrs=_scalars(dataset, attrs["study"]),
        series_attrs=_scalars(dataset, attrs["series"]),
        instance_attrs=_scalars(dataset, attrs["instance"]),
    )
    procedure = _first_code(dataset, "ProcedureCodeSequence")
    if procedure:
        parsed.study_attrs["ProcedureCode"] = procedure  # a small object, never indexed
    try:
        parsed.dose = dose_values(dataset)
    except Exception:  # a malformed dose tree is stored, just not summarised
        parsed.dose = {}
    if with_metadata:
        parsed.metadata = _metadata(dataset, study, series, sop, has_pixels)
    return parsed


def _read(data: bytes, limits: Limits) -> tuple[Dataset, bool]:
    stream = io.BytesIO(data)
    try:
        read_preamble(stream, False)
        meta = _read_file_meta_info(stream)
    except Exception as error:
        raise AccessError("MB-3001", f"unreadable file meta information: {error}") from error
    if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        _check_inflation(data[stream.tell() :], limits)
    stream.seek(0)
    try:
        dataset = pydicom.dcmread(stream, stop_before_pixels=True)
    except AccessError:
        raise
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as error:
        raise AccessError("MB-3001", f"DICOM parse failed: {str(error)[:200]}") from error
    except RecursionError as error:
        raise AccessError("MB-3004", "sequence nesting too deep") from error
    except Exception as error:
        raise AccessError("MB-3001", f"DICOM parse failed: {type(error).__name__}") from error
    syntax = str(meta.get("TransferSyntaxUID", ""))
    if syntax == DeflatedExplicitVRLittleEndian:
        return dataset, False  # inflated in memory by pydicom: offsets are not the file's
    has_pixels = stream.tell() < len(data)
    if has_pixels:
        _check_pixel_tail(data, stream.tell(), syntax)
        elements = [dataset.get(BaseTag(tag)) for tag in PIXEL_HEADER_TAGS]
        header = PixelHeader(*(None if e is None else e.value for e in elements))
        check_pixel_data(data, stream.tell(), syntax, header)
    elif _is_image(dataset):
        # pydicom stops quietly at the end of the bytes: an image without pixels was cut
        raise AccessError("MB-3001", "image without pixel data: the file is truncated")
    return dataset, has_pixels


def _check_media_storage(
    media_class: object, media_instance: object, sop_class: str, sop: str
) -> None:
    """PS3.10 7.1: the File Meta Information names the data set's own SOP Class and
    Instance; a copy whose meta names another instance is refused (absent: not checked)."""
    for keyword, value, wanted in (
        ("MediaStorageSOPClassUID", media_class, sop_class),
        ("MediaStorageSOPInstanceUID", media_instance, sop),
    ):
        if value is not None and str(value).strip() not in ("", wanted):
            raise AccessError("MB-3021", f"{keyword} differs from the data set's UID",
                            expression=keyword)  # fmt: skip


def _meta_uid(data: bytes, found: Scan, tag: int) -> str | None:
    element = found.meta.get(tag)
    if element is None:
        return None
    _vr, length, start = element
    return data[start : start + length].decode("latin_1").rstrip("\0 ").strip()


def _is_image(dataset: Dataset) -> bool:
    if "Rows" in dataset and "BitsAllocated" in dataset:
        return True
    sop_class = dataset.get("SOPClassUID")
    return sop_class is not None and "Image Storage" in getattr(sop_class, "name", "")


def _check_pixel_tail(data: bytes, offset: int, syntax: str) -> None:
    """The pixel data element must be complete: its declared length fits in the bytes."""
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"
    implicit = syntax == "1.2.840.10008.1.2"
    header = data[offset : offset + 12]
    if len(header) < 8:
        raise AccessError("MB-3001", "pixel data element cut short: the file is truncated")
    if implicit:
        length, size = struct.unpack(order + "I", header[4:8])[0], 8
    else:
        if len(header) < 12:
            raise AccessError("MB-3001", "pixel data element cut short: the file is truncated")
        length, size = struct.unpack(order + "I", header[8:12])[0], 12
    if length == UNDEFINED_LENGTH:
        if (
            data.rfind(b"\xfe\xff\xdd\xe0", offset) < 0
            and data.rfind(b"\xff\xfe\xe0\xdd", offset) < 0
        ):
            raise AccessError("MB-3001", "encapsulated pixel data without its end: truncated")
    elif offset + size + length > len(data):
        raise AccessError("MB-3004", "pixel data length runs past the data: truncated")


def _check_inflation(deflated: bytes, limits: Limits) -> None:
    """Inflate in bounded steps: refuse absolute size or ratio beyond the limits."""
    cap = min(limits.max_inflated_bytes, max(len(deflated), 1) * limits.max_inflate_ratio)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        pending = deflated
        while pending:
            chunk = inflater.decompress(pending, 1024 * 1024)
            total += len(chunk)
            if total > cap:
                raise AccessError("MB-3003", "deflated data set inflates past the limit")
            pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise AccessError("MB-3001", "deflated data set is corrupt") from error


def _check_structure(dataset: Dataset, max_depth: int, depth: int = 0) -> None:
    """Nesting depth and declared-versus-actual element lengths, without deep recursion."""
    if depth > max_depth:
        raise AccessError("MB-3004", f"sequence nesting deeper than {max_depth}")
    try:
        # the elements as read (raw): only sequences and UN of undefined length are
        # converted, to look inside them
        for tag, raw in list(dataset._dict.items()):
            if isinstance(raw, RawDataElement):
                declared, value = raw.length, raw.value
                if declared != UNDEFINED_LENGTH and value is not None and len(value) != declared:
                    raise AccessError("MB-3004", f"element {tag} length runs past the data")
                if raw.VR not in ("SQ", "UN", None) and raw.length != UNDEFINED_LENGTH:
                    continue
            element = dataset[tag]
            if element.VR == "SQ":
                for item in element.value:
                    _check_structure(item, max_depth, depth + 1)
    except AccessError:
        raise
    except RecursionError as error:
        raise AccessError("MB-3004", "sequence nesting too deep") from error
    except Exception as error:
        raise AccessError("MB-3001", f"DICOM element unreadable: {str(error)[:200]}") from error


def _first_code(dataset: Dataset, keyword: str) -> dict[str, str] | None:
    """The first code item of a code sequence as {value, scheme, meaning}."""
    try:
        items = dataset.get(keyword)
        if not items:
            return None
        item = items[0]
        code = {
            "value": _text(item.get("CodeValue") or item.get("LongCodeValue")),
            "scheme": _text(item.get("CodingSchemeDesignator")),
            "meaning": _text(item.get("CodeMeaning")),
        }
    except Exception:  # a malformed code item is stored, just not summarised
        return None
    return code if code["value"] else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


@cache
def _tags(keywords: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple((k, tag) for k in keywords if (tag := tag_for_keyword(k)) is not None)


def _scalars(dataset: Dataset, keywords: list[str]) -> dict[str, Any]:
    """Keyword -> one scalar (first value; PN as its text); arrays never reach an index."""
    out: dict[str, Any] = {}
    present = dataset._dict
    for keyword, tag in _tags(tuple(keywords)):
        if tag not in present or keyword == "IssuerOfAccessionNumberSequence":
            continue
        scalar = _scalar(dataset[tag].value)
        if scalar is not None:
            out[keyword] = scalar
    return out


def _scalar(element: Any) -> int | float | str | None:
    if element is None or element == "":
        return None
    value = element[0] if isinstance(element, pydicom.multival.MultiValue) else element
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else float(value)
    text = str(value).strip()
    return text or None


def fold(text: str) -> str:
    """Case- and accent-insensitive form for fuzzy person-name matching."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def _metadata(dataset: Dataset, study: str, series: str, sop: str, has_pixels: bool) -> bytes:
    base = f"studies/{study}/series/{series}/instances/{sop}/bulkdata/"

    def bulk(element: DataElement) -> str:
        return f"{base}{element.tag:08X}"

    try:
        body = dataset.to_json_dict(BULK_THRESHOLD, bulk)
    except Exception:
        body = dataset.to_json_dict(BULK_THRESHOLD, bulk, suppress_invalid_tags=True)
    if has_pixels:
        bits = dataset.get("BitsAllocated", 8)
        compressed = dataset.file_meta.TransferSyntaxUID.is_compressed
        vr = "OB" if compressed or bits <= 8 else "OW"
        body[PIXEL_DATA] = {"vr": vr, "BulkDataURI": f"{base}{PIXEL_DATA}"}
    return orjson.dumps(body)
