"""One message in, its ACK out: decode, archive, de-duplicate, translate, write, answer.

Every message is archived before it is answered, and never after anything it writes:
the record is made when the message's writes are planned, inserted finished in the unit
that applies them where the group commit takes that unit whole, else stored ahead of
them (its outcome then rides in their unit); a message that writes nothing (an update
that changes nothing, a refused message) is archived with its outcome in one write. Its
key (MSH-3, MSH-4, MSH-10) is unique, so a resend finds the first copy and gets the very
same ACK, and a copy racing the first fails the unit that carries its record. `AA` is
sent only after the FHIR writes have returned.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

import hl7apy

from access.access import Access, Action
from access.context import Actor, Door, RequestContext, operator
from access.errors import AccessError
from access.failures import log_failure
from access.pipeline import Exchange, Pipeline
from fhir_server import body_pool
from fhir_server.group_commit import Write
from fhir_server.router import FhirRouter
from hl7_bridge import archive as states
from hl7_bridge.ack import Original, ack_code_wanted, build_ack, original_of
from hl7_bridge.archive import Archive, Receipt, message_key, outcome_fields
from hl7_bridge.charset import Decoded, decode, read_text
from hl7_bridge.errors import Hl7Error, Hl7Warning, Interrupted, Outcome, attempt
from hl7_bridge.writer import Writer
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import V2Message
from mappings.hl7v2.tables import Tables
from mappings.hl7v2.translate import translate

log = logging.getLogger(__name__)

# hl7apy's libraries are the reference for which versions exist; 2.1/2.2 predate ours.
SUPPORTED_VERSIONS = frozenset(v for v in hl7apy.SUPPORTED_LIBRARIES if v not in ("2.1", "2.2"))
PROCESSING_IDS = frozenset({"P", "D", "T"})
RECENT_KEYS = 20_000  # message keys remembered (~2 MB): a sender's resends come soon
# An MLLP peer is a system client (trusted by network placement or TLS client certificate):
# it may read and write every type, as SMART v2 `system/*.cruds` would allow.
PEER_SCOPES = frozenset({"system/*.cruds", "system/*.*"})


@dataclass(slots=True)
class Result:
    ack: bytes | None  # encoded ACK payload; None when MSH-15/16 asked for none
    code: str  # MSA-1, or "" when no ACK
    receipt_id: str | None


@dataclass(slots=True)
class _Fresh:
    """A message not archived yet, and its record once made (`Archive.receive`)."""

    raw: bytes
    peer: str
    key: str | None
    fields: dict[str, Any]
    receipt: Receipt | None = None
    document: dict[str, Any] | None = None  # the record, prepared to ride with the writes


@dataclass(slots=True)
class Incoming:
    """An HL7 message on its way through the pipeline, as far as it could be parsed."""

    raw: bytes
    peer: str
    decoded: Decoded
    original: Original
    outcome: Outcome
    message: V2Message | None
    replay_of: str | None = None  # the archive record a replay processes again
    agent: str | None = None  # what authenticated the peer: `cn:NAME` or its allowed network


class Processor:
    def __init__(
        self,
        router: FhirRouter,
        archive: Archive,
        tables: Tables,
        timezone: tzinfo,
        honor_no_ack: bool = False,
        adt_demographics: bool = True,
    ) -> None:
        self.honor_no_ack = honor_no_ack  # MSH-15/16 NE: send nothing (else answer anyway)
        self.adt_demographics = adt_demographics  # only ADT changes a Patient's values
        self.router = router
        self.archive = archive
        self.tables = tables
        self.timezone = timezone
        # one pass per message through the hooks every door shares: an authorize hook
        # may refuse it, an audit hook sees it (its FHIR writes are its children)
        self.pipeline: Pipeline[Incoming, Result] = Pipeline(
            self._describe, self._act, self._refused, share_hooks_with=router.pipeline
        )
        # message keys this process archived lately: a resend is recognised before its
        # writes are planned (others are found by the record's unique key)
        self._keys: OrderedDict[str, None] = OrderedDict()

    def _seen(self, key: str | None) -> None:
        if key is None:
            return
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > RECENT_KEYS:
            self._keys.popitem(last=False)

    async def handle(self, raw: bytes, peer: str, agent: str | None = None) -> Result:
        """Never raises: every failure becomes an AE/AR answer. `agent`: how the listener
        authenticated the peer, recorded on the access's actor."""
        try:
            incoming = await self._read(raw, peer)
            incoming.agent = agent
            context = RequestContext(Door.HL7V2, scopes=PEER_SCOPES, peer=peer)
            return await self.pipeline.handle(Exchange(incoming, context))
        except Exception:
            log_failure(log, "handling a message failed unexpectedly")
            error = Hl7Error("AR", "207", "internal error; send the message again")
            return self._answer(original_of(decode(raw).text), error, "utf-8", None)

    async def _read(self, raw: bytes, peer: str, replay_of: str | None = None) -> Incoming:
        """What can be read of the message; a parse failure is kept in its outcome (the
        message still gets its access and its audit, then its AR). A large message is
        read on the body worker: 60-75 ms of decoding and splitting for 9 MiB would hold
        the event loop, and every FHIR read and HL7 ACK behind it (issue 17)."""
        try:
            read = await body_pool.sized(len(raw), read_message, raw)
        except Exception:  # failed on the worker: read again here, where `attempt` answers it
            log.debug("reading a message on the body worker failed", exc_info=True)
            read = None
        if read is None:
            return self._parse(raw, peer, replay_of)
        if read.note is not None:
            log.warning("%s", read.note)
        outcome = Outcome()
        with attempt(outcome, "parse"):
            if read.error is not None:
                raise read.error
        return Incoming(raw, peer, read.decoded, read.original, outcome, read.message, replay_of)

    @staticmethod
    def _parse(raw: bytes, peer: str, replay_of: str | None = None) -> Incoming:
        """`_read` on the event loop, raising nothing: any failure is in the outcome."""
        decoded = decode(raw)
        outcome = Outcome()
        message: V2Message | None = None
        with attempt(outcome, "parse"):
            message = parse(decoded.text)
        return Incoming(raw, peer, decoded, original_of(decoded.text), outcome, message, replay_of)

    def _describe(self, exchange: Exchange[Incoming, Result]) -> None:
        """The pipeline's prepare step: the message's one access."""
        incoming, context = exchange.request, exchange.context
        original, message = incoming.original, incoming.message
        actor = Actor("hl7-peer", f"{original.get(3)}^{original.get(4)}"[:200], incoming.agent)
        if incoming.replay_of is None:
            context.actor = actor
        event = None  # unknown until the message parses
        if message is not None:
            event = f"{message.header.message_type}^{message.header.trigger_event}"
        action = Action.HL7_EVENT if incoming.replay_of is None else Action.REPLAY
        exchange.access = context.access = Access(
            Door.HL7V2,
            action,
            context.actor,
            event=event,
            client_address=incoming.peer or None,
            request_id=context.request_id,
        )

    async def _act(self, exchange: Exchange[Incoming, Result]) -> Result:
        incoming = exchange.request
        if incoming.replay_of is not None:
            if await self.archive.claim(incoming.replay_of) is None:
                raise AccessError("MB-1002", "the archived message is gone")
            return await self._process(
                incoming.replay_of, incoming.message, incoming.outcome, incoming.original,
                incoming.decoded.codec, incoming.peer, exchange.context,
            )  # fmt: skip
        return await self._handle(incoming, exchange.context)

    def _refused(self, exchange: Exchange[Incoming, Result], error: AccessError) -> Result:
        """A hook's refusal (or an unexpected failure) as an ACK: AR when it is ours."""
        incoming = exchange.request
        return self._answer(
            incoming.original, Hl7Error.from_fhir(error), incoming.decoded.codec, None
        )

    async def _handle(self, incoming: Incoming, context: RequestContext) -> Result:
        raw, peer, decoded = incoming.raw, incoming.peer, incoming.decoded
        original, outcome, message = incoming.original, incoming.outcome, incoming.message
        key = None
        if message is not None:
            header = message.header
            key = message_key(original.get(3), original.get(4), header.control_id)
        fields: dict[str, Any] = {
            "control_id": original.get(10)[:200],
            "event": original.get(9)[:40],
            "charset": decoded.codec,
            "declared_charset": decoded.declared,
            "charset_mismatch": decoded.mismatch,
        }
        # archived when what it writes is planned: before the writes, or with its outcome
        # in one write when it writes nothing (_Fresh)
        fresh = _Fresh(raw, peer, key, fields)
        receipt_id = uuid.uuid4().hex
        if key is None or key not in self._keys:
            try:
                result = await self._process(
                    receipt_id, message, outcome, original, decoded.codec, peer, context, fresh
                )
                self._seen(key)
                return result
            except Interrupted:
                pass
        # a resend (a key this process archived: its record first, as before planning,
        # since a planned unit that fails on the key makes the group commit redo its
        # batch), or a copy that came first, or the archive failed
        try:
            receipt = fresh.receipt or await self.archive.receive(
                raw, peer, key, receipt_id, **fields
            )
        except Exception:
            log_failure(log, "archiving a message failed; answering AR so the sender retries")
            error = Hl7Error("AR", "207", "message could not be stored; send it again")
            return self._answer(original, error, decoded.codec, None)
        self._seen(key)
        if receipt.original is None:  # the first copy vanished meanwhile: apply this one
            return await self._process(
                receipt.id, message, outcome, original, decoded.codec, peer, context
            )
        return await self._copy(
            raw, peer, receipt.id, receipt.original, original, decoded.codec, context
        )

    async def oversize(self, head: bytes, size: int, limit: int, peer: str) -> Result:
        """AR for a frame over the size cap; its first bytes are archived with the reason."""
        text = f"message of {size} bytes is over the {limit} byte limit"
        return await self._refuse_frame(head, text, peer, size=size, truncated=True)

    async def malformed(self, payload: bytes, reason: str, peer: str) -> Result:
        """AR for a frame whose MLLP end is broken; kept whole in the archive, not applied."""
        return await self._refuse_frame(payload, reason, peer, framing=reason)

    async def _refuse_frame(self, raw: bytes, text: str, peer: str, **fields: Any) -> Result:
        decoded = decode(raw)
        original = original_of(decoded.text)
        error = Hl7Error("AR", "207", text)
        result = self._answer(original, error, decoded.codec, None)
        finished = outcome_fields(states.REJECTED, result.ack, [], f"AR 207 {error.text}", "207")
        try:
            await self.archive.receive(
                raw, peer, None, finished=finished, control_id=original.get(10)[:200],
                event=original.get(9)[:40], **fields,
            )  # fmt: skip
        except Exception:
            log_failure(log, "archiving a refused frame failed")
        return result

    async def replay(self, receipt_id: str, actor: Actor | None = None) -> Result:
        """Process an archived message again (dead letters, or one interrupted mid-way):
        one access of its own (Action.REPLAY) by `actor`, the local operator by default.
        The message is read to describe the access; it is claimed (its dead-letter status
        given up) only in the act, so a refused replay leaves the archive as it was."""
        document = await self.archive.get(receipt_id)
        if document is None:
            raise KeyError(receipt_id)
        incoming = await self._read(document["raw"], document.get("peer", ""), receipt_id)
        context = RequestContext(
            Door.HL7V2, actor=actor or operator(), scopes=PEER_SCOPES, peer=incoming.peer
        )
        return await self.pipeline.handle(Exchange(incoming, context))

    async def _reprocess(self, receipt_id: str, context: RequestContext) -> Result:
        """A resend processes its first copy again, within the resend's own access."""
        document = await self.archive.claim(receipt_id)
        if document is None:
            raise KeyError(receipt_id)
        incoming = await self._read(document["raw"], document.get("peer", ""), receipt_id)
        return await self._process(
            receipt_id, incoming.message, incoming.outcome, incoming.original,
            incoming.decoded.codec, incoming.peer, context,
        )  # fmt: skip

    async def _process(
        self,
        receipt_id: str,
        message: V2Message | None,
        outcome: Outcome,
        original: Original,
        codec: str,
        peer: str,
        context: RequestContext,
        fresh: _Fresh | None = None,
    ) -> Result:
        """Apply a message under its archive record: `receipt_id`'s, or the one `fresh`
        describes, made here. Interrupted when that record cannot be made as the first of
        its key (a resend: the caller answers) or at all, before anything is written."""

        async def archived(rides: bool) -> None:
            # before the message's writes: its record rides in their unit, as the first of
            # its key (a copy that came first fails that unit: Writer raises Interrupted),
            # or is stored first where it cannot ride
            if fresh is None or fresh.receipt is not None or fresh.document is not None:
                return
            try:
                if rides:
                    fresh.document = await self.archive.document(
                        fresh.raw, fresh.peer, receipt_id, **fresh.fields
                    )
                    return
                fresh.receipt = await self.archive.receive(
                    fresh.raw, fresh.peer, fresh.key, receipt_id, **fresh.fields
                )
            except Exception as error:
                raise Interrupted from error
            if not fresh.receipt.first:
                raise Interrupted

        references: list[str] = []
        recorded = False
        warnings: list[Hl7Warning] = []
        accepted = Result(None, "", receipt_id)
        if message is not None and outcome.error is None:
            header = message.header
            # the message's one access (context.access, the pipeline's): the FHIR writes
            # it makes are its children

            def processed(written: list[str]) -> list[Write]:
                # recorded as processed, with its AA, in the unit that applies it
                noted = _noted(warnings)
                if fresh is not None and fresh.document is not None:
                    finished = outcome_fields(states.PROCESSED, accepted.ack, written, noted)
                    return self.archive.first_writes(fresh.document, fresh.key, finished)
                return self.archive.finish_writes(
                    receipt_id, states.PROCESSED, accepted.ack, written, noted
                )

            with attempt(outcome, f"{header.message_type}^{header.trigger_event}"):
                translation = translate(message, self.tables, self.timezone, self.adt_demographics)
                warnings = [Hl7Warning.from_mapping(w) for w in translation.warnings]
                accepted = self._answer(original, None, codec, receipt_id, warnings)
                writer = Writer(self.router, context)
                references = await writer.apply(translation, processed, archived)
                recorded = writer.recorded
        if recorded and outcome.error is None:
            log.info("HL7 %s %s from %s: %s", original.get(9)[:20], receipt_id, peer, "AA")
            return accepted
        error = outcome.error
        result = self._answer(original, error, codec, receipt_id, warnings if not error else [])
        status = states.PROCESSED if error is None else states.DEAD_LETTER
        reason = f"{error.ack_code} {error.code} {error.text}" if error else _noted(warnings)
        code = error.code if error else None
        if fresh is not None and fresh.receipt is None:
            # nothing was written: the record is made finished, one write for both
            finished = outcome_fields(status, result.ack, references, reason, code)
            try:
                fresh.receipt = await self.archive.receive(
                    fresh.raw, fresh.peer, fresh.key, receipt_id, finished=finished, **fresh.fields
                )
            except Exception as problem:
                raise Interrupted from problem
            if not fresh.receipt.first:
                raise Interrupted
            log.info("HL7 %s %s from %s: %s", original.get(9)[:20], receipt_id, peer, result.code)
            return result
        try:
            await self.archive.finish(receipt_id, status, result.ack, references, reason, code)
        except Exception:
            log_failure(log, "recording the outcome of message %s failed", receipt_id)
            if error is None:
                # Applied but not recorded: AR makes the sender resend; the resend is
                # then applied again idempotently and recorded.
                failure = Hl7Error("AR", "207", "outcome could not be recorded; send it again")
                return self._answer(original, failure, codec, receipt_id)
        log.info("HL7 %s %s from %s: %s", original.get(9)[:20], receipt_id, peer, result.code)
        return result

    async def _copy(
        self,
        raw: bytes,
        peer: str,
        receipt_id: str,
        owner: dict[str, Any],
        original: Original,
        codec: str,
        context: RequestContext,
    ) -> Result:
        """A message whose (MSH-3, MSH-4, MSH-10) was seen before."""
        if owner.get("sha256") != hashlib.sha256(raw).hexdigest():
            error = Hl7Error(
                "AE", "205", "MSH-10 was already used by this sender for another message",
                "MSH^1^10",
            )  # fmt: skip
            result = self._answer(original, error, codec, receipt_id)
            reason = f"AE 205 {error.text}"
            await self.archive.finish(receipt_id, states.REJECTED, result.ack, [], reason, "205")
            return result
        if owner.get("status") == states.PROCESSED and "ack" in owner:
            # applied: the resend gets the very same answer, and nothing is written again
            await self.archive.finish(
                receipt_id, states.DUPLICATE, owner["ack"], owner.get("references"), None, None
            )
            ack = owner["ack"]
            return Result(ack, _msa_code(ack) if ack else "", receipt_id)
        # Answered AE/AR (its cause may be fixed by now, as HL7 engines assume) or never
        # finished (the process died): process it again, under the first record.
        failed = owner.get("status") == states.DEAD_LETTER
        why = "resent after AE/AR" if failed else "resent unfinished"
        await self.archive.finish(receipt_id, states.DUPLICATE, None, [], why, None)
        return await self._reprocess(str(owner["_id"]), context)

    def _answer(
        self,
        original: Original,
        error: Hl7Error | None,
        codec: str,
        receipt_id: str | None,
        warnings: list[Hl7Warning] | None = None,
    ) -> Result:
        code = ack_code_wanted(original, error, self.honor_no_ack)
        if code is None:
            return Result(None, "", receipt_id)
        text = build_ack(original, code, error, warnings=warnings or ())
        return Result(text.encode(codec, "replace"), code, receipt_id)


def parse(text: str) -> V2Message:
    """Parse and check the header: unusable headers are rejected (AR)."""
    try:
        message = V2Message(text)
    except MappingError as error:
        raise Hl7Error("AR", error.code, error.text, error.location) from None
    header = message.header
    missing = [
        (9, header.message_type),
        (10, header.control_id),
        (11, header.processing_id),
        (12, header.version),
    ]
    for number, value in missing:
        if not value:
            raise Hl7Error("AR", "101", f"MSH-{number} is required", f"MSH^1^{number}")
    if header.version not in SUPPORTED_VERSIONS:
        raise Hl7Error("AR", "203", f"version {header.version[:12]!r} is not supported", "MSH^1^12")
    if header.processing_id.upper() not in PROCESSING_IDS:
        raise Hl7Error("AR", "202", "MSH-11 processing id is not P, D or T", "MSH^1^11")
    return message


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """A message as read on the body worker: everything picklable, the log note apart."""

    decoded: Decoded
    note: str | None  # a character-set mismatch to log (charset.read_text)
    original: Original
    message: V2Message | None
    error: Hl7Error | None  # why it could not be parsed


def read_message(raw: bytes) -> ReadMessage:
    """Decode and parse `raw` (on the body worker for a large message); an unexpected
    failure is raised, for the caller to read the message again where it is answered."""
    decoded, note = read_text(raw)
    original = original_of(decoded.text)
    try:
        return ReadMessage(decoded, note, original, parse(decoded.text), None)
    except Hl7Error as error:
        return ReadMessage(decoded, note, original, None, error)


def _noted(warnings: list[Hl7Warning]) -> str | None:
    """The archive's reason for a message applied with warnings (field ids only)."""
    if not warnings:
        return None
    return "applied with warnings: " + ", ".join(f"W {w.code} {w.location}" for w in warnings)


def _msa_code(ack: bytes) -> str:
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA"):
            return line[4:6].decode("ascii", "replace")
    return ""
