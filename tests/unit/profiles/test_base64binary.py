"""base64Binary is checked once, strictly, and the model does not decode it again."""

from __future__ import annotations

import base64
import os

import pytest

from access.budget import Budget
from access.errors import AccessError
from fhir_server.body import loads
from fhir_server.interactions.common import valid_resource
from profiles.base64binary import is_base64
from profiles.validator import validate

PAYLOAD = base64.b64encode(os.urandom(200_003)).decode()  # "+", "/" and "=" padding


@pytest.mark.parametrize(
    "text",
    [
        PAYLOAD,
        "QUFB",
        "QQ==",
        "QUE=",
        "QU FB\r\nQUFB\n",  # MIME-wrapped or spaced: R4 allows whitespace
        base64.encodebytes(os.urandom(300)).decode(),
    ],
)
def test_base64_is_accepted(text: str) -> None:
    assert is_base64(text)
    assert base64.b64decode(text)  # what pydantic's Base64Bytes would decode


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "QUF",  # not a group of four
        "Q===",  # three padding characters
        "QQ==QUFB",  # padding inside
        "QU-B",  # base64url's alphabet
        "QU_B",
        "QUFB!",
        "QUFBé===",
        PAYLOAD[:-4] + "QU@B",  # one wrong character at the end of 266 KiB
        "QUFB" * 20_000 + "\x00UFB",  # past the first 64 KiB slice
    ],
)
def test_what_is_not_base64_is_refused(text: str) -> None:
    assert not is_base64(text)


def binary(data: str) -> bytes:
    return f'{{"resourceType":"Binary","contentType":"application/pdf","data":"{data}"}}'.encode()


def test_a_valid_binary_is_kept_as_sent() -> None:
    resource = valid_resource(binary(PAYLOAD), "Binary", Budget())
    assert resource["data"] == PAYLOAD  # the placeholder the model saw is not stored


# pydantic's `Base64Bytes` (the model's own check) drops characters outside the alphabet
# and extra padding ("QUFB!!!!" passes it), so only what it refuses is asserted here
@pytest.mark.parametrize("data", ["QUF", "QUFBQ", "Q!UF", PAYLOAD[:-5]])
def test_bad_base64_is_refused_naming_the_element(data: str) -> None:
    with pytest.raises(AccessError) as caught:
        valid_resource(binary(data), "Binary", Budget())
    assert (caught.value.code, caught.value.status) == ("MB-1006", 422)
    assert [issue.expression for issue in caught.value.issues] == ["Binary.data"]


def test_bad_base64_inside_an_attachment_is_named() -> None:
    patient = {"resourceType": "Patient", "photo": [{"contentType": "image/png", "data": "QUF"}]}
    issues = validate(patient)
    assert [issue.expression for issue in issues] == ["Patient.photo[0].data"]


def test_an_over_long_string_that_is_not_base64_keeps_the_string_limit() -> None:
    small = Budget(max_string_bytes=16)
    with pytest.raises(AccessError) as caught:
        loads(binary("QUFB" * 4 + "QU-B"), small)
    assert (caught.value.code, caught.value.expression) == ("MB-1042", "Binary.data")


def test_base64_checked_by_the_parser_is_not_decoded_by_the_model() -> None:
    seen: set[int] = set()
    resource = loads(binary(PAYLOAD), Budget(), seen)
    assert seen == {id(resource["data"])}
    # a value the parser vouched for goes to the model as a placeholder; a string that
    # was not vouched for is still checked here, so a caller cannot skip the check
    assert validate(resource, seen) == []
    resource["data"] = "QUF" + "B" * 100
    assert [i.expression for i in validate(resource, seen)] == ["Binary.data"]


def test_sampled_data_is_a_string_and_stays_valid() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "ecg"},
        "valueSampledData": {
            "origin": {"value": 0},
            "period": 1,
            "dimensions": 1,
            "data": "1 2 3 E U L 4",
        },
    }
    assert validate(observation) == []
    observation["valueSampledData"]["data"] = "QUFB" * 10  # looks like base64: still a string
    assert validate(observation) == []


def test_a_patch_is_held_to_the_same_base64_check() -> None:
    from fhir_server.interactions.patch import _patched

    raw = b'{"resourceType":"Binary","id":"b1","contentType":"text/plain","data":"QUFB"}'
    replace = [{"op": "replace", "path": "/data", "value": PAYLOAD}]
    assert _patched(raw, replace, Budget(), "Binary", "b1")["data"] == PAYLOAD
    with pytest.raises(AccessError) as caught:
        _patched(raw, [{**replace[0], "value": "QUF"}], Budget(), "Binary", "b1")
    assert [issue.expression for issue in caught.value.issues] == ["Binary.data"]
