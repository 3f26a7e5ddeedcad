"""Byte encodings of stored records: the only module that builds msgspec codecs.

Documents and log entries are msgpack. msgpack keeps every Convex type apart
(integers, 64-bit floats including NaN and -0.0, bytes, strings, arrays,
maps), so a stored document decodes to exactly the value that was written.
Encoders and decoders are built once and reused (building one per call would
cost more than the encoding itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

__all__ = [
    "DecodeError",
    "decode",
    "decode_document",
    "document_decoder",
    "encode",
    "encode_document",
    "encode_sorted",
    "typed_decoder",
]

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_sorted_encoder = msgspec.msgpack.Encoder(order="sorted")
_decoder = msgspec.msgpack.Decoder()
_document_decoder = msgspec.msgpack.Decoder(dict[str, Any])

#: What the decoders raise for bytes that are not what they expect (msgspec's; its
#: ``ValidationError``, a wrong shape, included): stored bytes that raise it are damaged.
DecodeError = msgspec.DecodeError

#: Encode any msgpack-able value (documents, log entries, catalog records).
encode = _encoder.encode
#: Encode with every map's keys sorted: one encoding per value whatever the order its
#: dicts were built in (to compare declarations, not to store documents).
encode_sorted = _sorted_encoder.encode
#: Decode msgpack bytes (or a zero-copy buffer) into plain Python values.
decode = _decoder.decode


def typed_decoder(tp: type[T]) -> Callable[[bytes | memoryview], T]:
    """A reusable msgpack decoder into ``tp`` (a Struct or typed container)."""
    return msgspec.msgpack.Decoder(tp).decode


def encode_document(document: dict[str, Any]) -> bytes:
    """Encode a converted document (system fields included). Cost: one msgpack pass."""
    return _encoder.encode(document)


def document_decoder() -> Callable[[bytes | memoryview], dict[str, Any]]:
    """:func:`decode_document` as a bound C method, for hot loops (no Python frame)."""
    return _document_decoder.decode


def decode_document(data: bytes | memoryview) -> dict[str, Any]:
    """Decode a stored document into a fresh ``dict`` the caller may mutate."""
    return _document_decoder.decode(data)
