"""imaging.parse_pool: worker processes answer exactly what inline parsing answers."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from access.errors import AccessError
from imaging.parse import Limits, ParsedInstance, parse
from imaging.parse_pool import Parser
from tests.support.dicom import nested_sequences, renamed, sample_bytes
from tests.support.worker_probe import nothing, probe


async def test_workers_parse_and_refuse_like_inline() -> None:
    good = [renamed("CT_small.dcm"), renamed("MR_small.dcm")]
    bad = [nested_sequences(300), sample_bytes("CT_small.dcm")[:3000], b"plain text" * 40]
    parser = Parser(workers=1)
    try:
        answers = await parser.parse_many(good + bad, Limits())
    finally:
        parser.stop()
    for data, answer in zip(good, answers[:2], strict=True):
        assert isinstance(answer, ParsedInstance)
        inline = parse(data, Limits())
        assert (answer.sop, answer.study, answer.study_attrs, answer.instance_attrs) == (
            inline.sop, inline.study, inline.study_attrs, inline.instance_attrs,
        )  # fmt: skip
    assert [a.code if isinstance(a, AccessError) else a for a in answers[2:]] == [
        "MB-3004",
        "MB-3001",
        "MB-3001",
    ]


async def test_without_workers_everything_is_inline() -> None:
    parser = Parser(workers=0)
    answers = await parser.parse_many([renamed("CT_small.dcm"), b"x" * 200], Limits())
    assert isinstance(answers[0], ParsedInstance)
    assert isinstance(answers[1], AccessError)
    assert answers[1].code == "MB-3001"


async def test_one_instance_is_parsed_inline_and_several_on_the_workers() -> None:
    parser = Parser(workers=1)
    try:
        single = await parser.parse_many([renamed("CT_small.dcm")], Limits())
        assert isinstance(single[0], ParsedInstance)
        assert parser._pool is None  # a C-STORE's instance never waits on the pipe
        several = await parser.parse_many([renamed("CT_small.dcm") for _ in range(3)], Limits())
        assert all(isinstance(answer, ParsedInstance) for answer in several)
        assert parser._pool is not None
    finally:
        parser.stop()


async def test_every_worker_has_the_parser_before_its_first_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker imports the parser as it starts, not when its first STOW arrives: the
    warm-up tasks go to whichever worker is free first, so a late one could get none.
    Here they import nothing (a task's function is imported by name in the worker), so
    only the start of each worker can have imported the parser."""
    monkeypatch.setattr("imaging.parse_pool._warm", nothing)
    workers = 2
    parser = Parser(workers=workers)
    manager = multiprocessing.get_context("spawn").Manager()
    try:
        parser.start()
        assert parser._pool is not None
        barrier = manager.Barrier(workers)
        loop = asyncio.get_running_loop()
        found = await asyncio.gather(*(
            loop.run_in_executor(parser._pool, probe, barrier, "imaging.parse")
            for _ in range(workers)
        ))  # fmt: skip
    finally:
        parser.stop()
        manager.shutdown()
    assert len({pid for pid, _, _ in found}) == workers  # one probe per worker
    assert all(imported for _, imported, _ in found)


@pytest.mark.parametrize("workers", [1, 0])
async def test_dicom_json_made_on_a_worker_is_the_inline_one(workers: int) -> None:
    """The background fill's DICOM JSON: as `metadata_of` makes it, None for what it
    cannot read, the others made all the same."""
    from imaging.parse import metadata_of

    good = [renamed("CT_small.dcm"), renamed("MR_small.dcm")]
    parser = Parser(workers=workers)
    try:
        made = await parser.metadata_many([good[0], b"not DICOM" * 30, good[1]])
        assert (parser._pool is not None) is (workers > 0)
    finally:
        parser.stop()
    assert made == [metadata_of(good[0]), None, metadata_of(good[1])]
