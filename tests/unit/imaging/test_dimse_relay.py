"""The hand-over of a retrieve's objects from its pass (on the loop) to the association
thread: one object at a time, in order, and a thread that stops taking ends the pass."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
from pydicom.uid import generate_uid

from imaging.dimse import relay
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.status import PENDING
from imaging.objectstore import LocalObjectStore, instance_key
from tests.support.dicom import renamed


async def stored(store: LocalObjectStore, count: int) -> list[dict[str, Any]]:
    study, series = generate_uid(), generate_uid()
    rows = []
    for _ in range(count):
        blob = renamed("CT_small.dcm", study=study, series=series)
        sop = str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True).SOPInstanceUID)
        key = instance_key(study, series, sop, hashlib.sha256(blob).hexdigest())
        await store.put(key, blob)
        rows.append({"_id": sop, "key": key})
    return rows


def start(bridge: LoopBridge, store: LocalObjectStore, rows: list[dict[str, Any]]) -> Any:
    handover = relay.Relay(bridge, patience=10.0)
    running = bridge.submit(handover.around(relay.deliver(handover, store, rows)))
    return relay.Retrieval(handover, running)


async def test_every_object_in_order_then_the_pass_ends(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    rows = await stored(store, 4)
    bridge = LoopBridge(asyncio.get_running_loop(), 10.0)
    # a missing object is a failed sub-operation, named by its SOP Instance UID
    rows.append({"_id": generate_uid(), "key": "dicom/missing.dcm"})

    def association() -> tuple[list[str], list[bool], int]:
        retrieval = start(bridge, store, rows)
        selected = retrieval.selected()
        sent = list(retrieval.sub_operations(SimpleNamespace(is_cancelled=False)))
        assert {status for status, _ in sent} == {PENDING}
        uids = [str(dataset.SOPInstanceUID) for _, dataset in sent]
        whole = ["PixelData" in dataset for _, dataset in sent]
        return uids, whole, len(selected) if retrieval.running.done() else -1

    uids, whole, selected = await asyncio.to_thread(association)
    assert uids == [row["_id"] for row in rows]
    assert whole == [True, True, True, True, False]
    assert selected == 5  # and the pass had ended when the last sub-operation was taken


async def test_a_thread_that_stops_taking_ends_the_pass_without_reading_on(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path)
    rows = await stored(store, 6)
    bridge = LoopBridge(asyncio.get_running_loop(), 10.0)

    def association() -> Any:
        retrieval = start(bridge, store, rows)
        retrieval.selected()
        operations = retrieval.sub_operations(SimpleNamespace(is_cancelled=False))
        next(operations)
        next(operations)
        operations.close()  # pynetdicom drops the generator: the association is gone
        retrieval.close()
        return retrieval.running

    running = await asyncio.to_thread(association)
    handed = await asyncio.wait_for(asyncio.wrap_future(running), 5.0)
    # two taken, at most one more waiting in the hand-over: the rest were never read
    assert 2 <= handed <= 3


async def test_a_cancel_stops_the_sub_operations(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    rows = await stored(store, 5)
    bridge = LoopBridge(asyncio.get_running_loop(), 10.0)
    event = SimpleNamespace(is_cancelled=False)

    def association() -> tuple[list[int], Any]:
        retrieval = start(bridge, store, rows)
        retrieval.selected()
        statuses = []
        for status, _ in retrieval.sub_operations(event):
            statuses.append(status)
            event.is_cancelled = True  # C-CANCEL arrives after the first
        return statuses, retrieval.running

    statuses, running = await asyncio.to_thread(association)
    assert statuses == [PENDING, 0xFE00]
    assert await asyncio.wait_for(asyncio.wrap_future(running), 5.0) <= 2
