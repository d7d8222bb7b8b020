"""The compressed file: header, checksums and the ANS payload (format in ``docs/CODEC.md``).

Layout (little-endian)::

    magic b"SVAE" | version u8 | header length u32 | header (zlib-compressed JSON) | header CRC32 u32
    payload: 32-bit words, top of the ANS stack first | payload CRC32 u32

The header names the model (a hash of its config and weights), the machine probe (:func:`probe`), the coding
parameters, the images' shapes, modes and names, the tiling, how many images each group holds, and a CRC32
of the original pixels, which the decoder checks so a file never decodes silently to a wrong image. The
payload stores the stack top first, so a prefix of the file holds the first group's ``u`` and ``y_1``.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfvae.errors import SelfVAEError

MAGIC = b"SVAE"
VERSION = 1
_HEAD = struct.Struct("<4sBI")  # magic, version, header length


class CodecError(SelfVAEError):
    """A compressed file that cannot be decoded: damaged, truncated, or for another model or machine."""


@dataclass
class Container:
    header: dict[str, Any]
    words: np.ndarray  # uint32, stack order (bottom first)

    def to_bytes(self) -> bytes:
        head = zlib.compress(json.dumps(self.header, separators=(",", ":")).encode(), 9)
        payload = np.ascontiguousarray(self.words[::-1], dtype="<u4").tobytes()
        return b"".join([
            _HEAD.pack(MAGIC, VERSION, len(head)), head, struct.pack("<I", zlib.crc32(head)),
            payload, struct.pack("<I", zlib.crc32(payload)),
        ])

    @classmethod
    def parse_header(cls, data: bytes, name: str) -> tuple[dict[str, Any], int]:
        """The header and the offset where the payload starts; raises :class:`CodecError` naming ``name``."""
        if len(data) < _HEAD.size + 4:
            raise CodecError(f"{name}: too short to be a selfvae compressed file ({len(data)} bytes)")
        magic, version, n = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise CodecError(f"{name}: not a selfvae compressed file (starts with {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise CodecError(f"{name}: file format version {version}; this selfvae reads version {VERSION}")
        end = _HEAD.size + n
        if len(data) < end + 4:
            raise CodecError(f"{name}: truncated inside the header ({len(data)} bytes)")
        head = data[_HEAD.size:end]
        if zlib.crc32(head) != struct.unpack_from("<I", data, end)[0]:
            raise CodecError(f"{name}: the header is damaged (checksum mismatch)")
        return json.loads(zlib.decompress(head)), end + 4

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> Container:
        header, start = cls.parse_header(data, name)
        expected = start + 4 * header["payload_words"] + 4
        if len(data) != expected:
            what = "truncated" if len(data) < expected else "longer than its header says"
            raise CodecError(f"{name}: {what} ({len(data)} bytes, expected {expected})")
        payload = data[start:-4]
        if zlib.crc32(payload) != struct.unpack_from("<I", data, len(data) - 4)[0]:
            raise CodecError(f"{name}: the compressed data is damaged (checksum mismatch)")
        return cls(header, np.frombuffer(payload, dtype="<u4")[::-1].astype(np.uint32))

    @classmethod
    def prefix_words(cls, data: bytes, name: str) -> tuple[dict[str, Any], np.ndarray]:
        """Header and the whole 32-bit words present in a (possibly truncated) file, in stack order: for
        progressive decoding from a prefix. No payload checksum can be checked here."""
        header, start = cls.parse_header(data, name)
        body = data[start:start + 4 * header["payload_words"]]
        n = len(body) // 4
        return header, np.frombuffer(body[: 4 * n], dtype="<u4")[::-1].astype(np.uint32)


def header_bytes(header: dict[str, Any]) -> int:
    """Bytes a file spends outside the payload words (magic, version, header, both checksums)."""
    return _HEAD.size + len(zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)) + 8


def read(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise CodecError(f"{p}: no such file")
    return p.read_bytes()
