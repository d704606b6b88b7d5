"""A C-STORE's data set as a Part 10 file: the File Meta Information pynetdicom would write.

pynetdicom's `Event.encoded_dataset(include_meta=True)` builds a pydicom
FileMetaDataset and writes it for every instance (~0.2 ms of CPU holding the GIL, about
a twentieth of an instance's work on the DIMSE path). The group is always the same seven
explicit VR little endian elements, so it is written here directly; a test holds the
bytes equal to pynetdicom's. Anything unusual (a UID that is not ASCII) takes
pynetdicom's path.

The group is written *in front of* the data set as it arrives (`Part10Buffer`, set up
per association by `receive_as_part10`): pynetdicom collects a data set's fragments in
a BytesIO, and joining the group to it made a second copy of every instance (200 MiB
more memory and a 200 MiB copy per 200 MiB C-STORE, ~0.2-0.5 s of a core on this box,
issue 17: largest-dimse, L7-size). A buffer that starts with the group is the Part 10
file itself, and `getvalue()` hands it over without a copy.

From `Spool.from_bytes` on, the file is collected in a temporary file instead (issue 17,
L7-size): a BytesIO write copies each fragment into fresh pages with the GIL held (half
of the GIL's time while a 629 MB C-STORE streamed, py-spy `--gil`, and every FHIR read
and HL7 ACK of the event loop waited for it), where `os.write` and the one `os.pread`
at the end let go of it. Past the instance cap only the first `Spool.prefix` bytes are
kept and the rest is hashed as it passes: an over-size instance is refused from its
prefix, its size and the digest of everything sent (`Oversize`), never held whole.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import struct
import tempfile
import weakref
from dataclasses import dataclass
from typing import IO, Any, cast

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from imaging.ingest import Oversize

log = logging.getLogger(__name__)
PREAMBLE = b"\0" * 128 + b"DICM"
_SHORT = struct.Struct("<HH2sH")  # tag, VR, 2-byte length
_VERSION = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
# an instance from this size is collected in a temporary file (most CT and MR images
# are smaller and stay in memory)
SPOOLED_BYTES = 1024 * 1024
_READ_BACK = 8 * 1024 * 1024  # the spooled bytes hashed at a time when the cap is passed


@dataclass(frozen=True, slots=True)
class Spool:
    """How a C-STORE's Part 10 file is collected: in a temporary file (in `directory`,
    the system's temporary directory by default) from `from_bytes`; past `limit` (the
    ingest's instance cap) only its first `prefix` bytes are kept (the ingest's
    quarantine prefix)."""

    limit: int
    prefix: int
    from_bytes: int = SPOOLED_BYTES
    directory: str | None = None


class Part10Buffer(io.BytesIO):
    """A DIMSE message's data set buffer that, when the message is a C-STORE request,
    writes the preamble and File Meta Information before the first fragment, and with a
    `Spool` moves to a temporary file once the file grows large (see the module).

    Holds weak references only: pynetdicom's message holds this buffer, and a cycle
    would keep a whole instance alive until the cyclic collector ran."""

    def __init__(
        self, message: DIMSEMessage, assoc: Association, spool: Spool | None = None
    ) -> None:
        super().__init__()
        self._message = weakref.ref(message)
        self._assoc = weakref.ref(assoc)
        self._spool = spool
        self._first = True
        self.seeded = False  # True: the buffer holds the whole Part 10 file
        self._file: IO[bytes] | None = None  # the temporary file, once spooled
        self._size = 0  # bytes of the Part 10 file received, once spooled
        self._digest: Any = None  # SHA-256 of everything received, once over the limit
        self._value: bytes | Oversize | None = None  # `received`'s answer, once read

    def write(self, data: Any) -> int:
        if self._first:
            self._first = False
            self._seed()
        if self._file is None:
            spool = self._spool
            if spool is None or not self.seeded or self.tell() + len(data) < spool.from_bytes:
                return super().write(data)
            if not self._to_file(spool):
                return super().write(data)
        try:
            self._append(data)
        except OSError as error:
            if self._digest is not None:
                raise  # over the limit only the prefix is kept: nothing to go back to
            self._to_memory(error)
            return super().write(data)
        return len(data)

    def received(self) -> bytes | Oversize:
        """The Part 10 file, or what is kept of it over the limit; the temporary file is
        read (in one `pread`, without the GIL) and closed."""
        if self._value is not None:
            return self._value
        if self._file is None:
            return super().getvalue()
        file, self._file = self._file, None
        try:
            if self._digest is not None:
                assert self._spool is not None
                prefix = _read(file.fileno(), self._spool.prefix)
                self._value = Oversize(prefix, self._size, self._digest.hexdigest())
            else:
                self._value = _read(file.fileno(), self._size)
        finally:
            file.close()
        return self._value

    def getvalue(self) -> bytes:
        value = self.received()
        if isinstance(value, Oversize):
            raise ValueError("the data set was over the size limit: only its prefix was kept")
        return value

    def _to_file(self, spool: Spool) -> bool:
        """Move what was received to a temporary file; False (it stays in memory, and so
        does the rest) when no file can be made or written."""
        try:
            file = tempfile.TemporaryFile(dir=spool.directory)  # noqa: SIM115 (closed in `received`)
        except OSError as error:
            self._spool = None
            log.warning("C-STORE data set kept in memory: no temporary file (%s)", error.strerror)
            return False
        # an association aborted mid-instance never reads it: closed with the buffer
        weakref.finalize(self, file.close)
        held = self.getbuffer()
        try:
            _write_all(file.fileno(), held)
            self._size = len(held)
        except OSError as error:
            file.close()
            self._spool = None
            log.warning("C-STORE data set kept in memory: temporary file full (%s)", error.strerror)
            return False
        finally:
            held.release()
        self.seek(0)
        self.truncate()  # the memory goes back now
        self._file = file
        return True

    def _to_memory(self, error: OSError) -> None:
        """The temporary file could not take more (a full disk): what it holds goes back
        into memory, where the rest follows; the instance is not lost."""
        assert self._file is not None
        file, self._file = self._file, None
        try:
            kept = _read(file.fileno(), self._size)
        finally:
            file.close()
        self._spool = None
        self._size = 0
        log.warning("C-STORE data set kept in memory: temporary file full (%s)", error.strerror)
        super().write(kept)

    def _append(self, data: Any) -> None:
        assert self._file is not None
        assert self._spool is not None
        if self._digest is None and self._size + len(data) > self._spool.limit:
            self._over_limit(self._file.fileno(), self._spool)
        if self._digest is not None:
            self._digest.update(data)  # hashlib lets go of the GIL for large updates
        else:
            _write_all(self._file.fileno(), data)
        self._size += len(data)

    def _over_limit(self, fd: int, spool: Spool) -> None:
        """Hash what was kept so far, then keep only its prefix."""
        digest = hashlib.sha256()
        for offset in range(0, self._size, _READ_BACK):
            digest.update(os.pread(fd, min(_READ_BACK, self._size - offset), offset))
        os.ftruncate(fd, min(self._size, spool.prefix))
        self._digest = digest

    def _seed(self) -> None:
        message, assoc = self._message(), self._assoc()
        if not isinstance(message, C_STORE_RQ) or assoc is None:
            return
        try:
            command = message.command_set
            context = assoc._accepted_cx[cast(int, message.context_id)]
            meta = file_meta(
                str(command.AffectedSOPClassUID),
                str(command.AffectedSOPInstanceUID),
                str(context.transfer_syntax[0]),
            )
        except (AttributeError, KeyError, IndexError, UnicodeEncodeError, struct.error):
            return  # `part10` joins the group the usual way
        super().write(PREAMBLE + meta)
        self.seeded = True


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read(fd: int, size: int) -> bytes:
    """`size` bytes from the start of the file (one `pread` unless the kernel splits it)."""
    data = os.pread(fd, size, 0)
    while len(data) < size:
        more = os.pread(fd, size - len(data), len(data))
        if not more:
            raise OSError("the spooled data set is shorter than what was received")
        data += more
    return data


def receive_as_part10(event: Event, spool: Spool | None = None) -> None:
    """EVT_CONN_OPEN: every DIMSE message of this association collects its data set in a
    `Part10Buffer` (spooled with `spool`)."""
    assoc: Association = event.assoc
    dimse = assoc.dimse
    receive = dimse.receive_primitive

    def receive_primitive(primitive: Any) -> None:
        if dimse.message is None:
            message = DIMSEMessage()
            message.data_set = Part10Buffer(message, assoc, spool)
            dimse.message = message
        receive(primitive)

    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]


def part10(event: Event) -> bytes | Oversize:
    """The received data set with its File Meta Information, as pynetdicom encodes it;
    over the spool's limit, what was kept of it."""
    request = cast(C_STORE, event.request)
    buffer = request.DataSet
    if isinstance(buffer, Part10Buffer) and buffer.seeded:
        return buffer.received()  # the buffer already is the file: no copy
    body = cast(bytes, buffer.getvalue())  # type: ignore[union-attr]
    try:
        meta = file_meta(
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
        )
    except (UnicodeEncodeError, struct.error):
        return event.encoded_dataset(include_meta=True)
    return b"".join((PREAMBLE, meta, body))


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Group 0002 with its group length, explicit VR little endian."""
    elements = b"".join(
        (
            _VERSION,
            _text(0x0002, "UI", sop_class, b"\0"),
            _text(0x0003, "UI", sop_instance, b"\0"),
            _text(0x0010, "UI", transfer_syntax, b"\0"),
            _text(0x0012, "UI", str(PYNETDICOM_IMPLEMENTATION_UID), b"\0"),
            _text(0x0013, "SH", PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(elements))
    return group_length + elements


def _text(element: int, vr: str, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    return _SHORT.pack(0x0002, element, vr.encode("ascii"), len(raw)) + raw
