"""Is a string FHIR base64Binary (RFC 4648 base64, whitespace allowed between quanta)?

An 8 MiB `Binary.data` was checked twice: by a regex over its alphabet (sre walks it one
character at a time, ~14 ms on a quiet core) and by pydantic's `Base64Bytes`, which
decodes it into a 6 MiB `bytes` that the validator then throws away (~20 ms) and does
not check strictly (`b64decode` drops characters outside the alphabet). Here it is
checked once, strictly and without decoding: `bytes.translate` and `bytes.isalnum` are C
loops over a table. They run over 64 KiB slices, because fresh 8 MiB buffers cost more
in page faults (~15 ms) than the loops themselves (issue 17, largest-fhir; docs/limits.md).
"""

from __future__ import annotations

# "+" and "/" are the two base64 characters that are not ASCII letters or digits: map them
# to one that is, so `isalnum` checks the whole alphabet in one pass
_ALPHABET_AS_ALNUM = bytes.maketrans(b"+/", b"AA")
_WHITESPACE = " \t\r\n\f\v"
_SLICE = 64 * 1024


def is_base64(text: str) -> bool:
    """True if `text` is base64 as R4's base64Binary and RFC 4648 have it: the alphabet
    in groups of four, "=" only as the last one or two characters, whitespace anywhere."""
    if not text.isascii():
        return False
    if any(space in text for space in _WHITESPACE):
        text = "".join(text.split())
    if len(text) % 4:
        return False
    text = text.removesuffix("=").removesuffix("=")
    # an empty value is not base64Binary (R4: a primitive has a value or is absent)
    if not text:
        return False
    return all(
        text[start : start + _SLICE].encode("ascii").translate(_ALPHABET_AS_ALNUM).isalnum()
        for start in range(0, len(text), _SLICE)
    )
