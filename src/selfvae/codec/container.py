"""The compressed file: header, checksums and the ANS payload (format in ``docs/CODEC.md``).

Layout (little-endian)::

    magic b"SVAE" | version u8 | header length u32 | header | header CRC32 u32
    payload: 32-bit words, top of the ANS stack first | payload CRC32 u32

The header is a fixed binary part (:data:`_FIXED`) and a variable part (hint, image shapes, names, group
sizes) as JSON, zlib-compressed when that is shorter.

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

from selfvae.codec.images import tile_grid
from selfvae.data.images import MAX_PIXELS
from selfvae.errors import SelfVAEError

MAX_SAMPLES = 256  # importance samples an image at most (CodingParams.samples)
MAX_PRECISION = 8  # the finest chosen-latent grid, 2^-8

MAGIC = b"SVAE"
# 2: RealNVP priors coded one coupling at a time (local bits-back); 3: bits back on pixels' components;
# 4: the flow's couplings run on chunks of their own size (CodingParams.flow_chunk), and the networks' ELUs
# take the faster form of selfvae.nn.layers.elu (older files decode with F.elu, as they were written);
# 5: importance samples per group (CodingParams.samples, BB-IS), in the variable part;
# 6: groups coded with chosen latents (selfvae.codec.chosen): flag bit 1 and their grids in the variable part;
# 7: small groups run at smaller chunks (CodingParams.small_chunks): flag bit 2
# 8: tiles sent without the model, under the model-coded ones (the file never expands): their flags' runs in the
#    variable part ("raw"), and "fallback" when they travel as one PNG of their mosaic instead of raw values (from
#    version 10 on, a file whose every tile goes so may hold one PNG of each image instead: "fallback" "images")
# 9: lossy files code their first images with chosen latents too (no initial bits): a version-8 reader would
#    decode those groups as lossless ones
# 10: the pixels of a tile outside its image are not coded and repeat the image's edge (CodingParams.edge_cover):
#    flag bit 3
# 11: a sub-pixel coded under its mixture component in two 16-way steps, its run of 16 values then its place in it
#    (CodingParams.split_values): flag bit 4
VERSION = 11
_HEAD = struct.Struct("<4sBI")  # magic, version, header length
# model id (16 bytes), probe (8), pixel CRC, payload words, initial words, precision, flow precision, flow
# noise, chunk, group, tile C, H, W, lossy (0 none, 1 y only, 2 y + z), lossy z precision, lossy decode (0 mean);
# from version 3 on, flags (bit 0: CodingParams.mixture_bits_back); from version 4 on, flow chunk (u8)
_FIXED_V2 = struct.Struct("<16s8sIIIBBBBHBHHBBB")
_FIXED_V3 = struct.Struct(_FIXED_V2.format + "B")
_FIXED = struct.Struct(_FIXED_V3.format + "B")
_FIXED_BY_VERSION = {2: _FIXED_V2, 3: _FIXED_V3, 4: _FIXED, 5: _FIXED, 6: _FIXED, 7: _FIXED, 8: _FIXED, 9: _FIXED,
                     10: _FIXED, 11: _FIXED}
# a version 2 file is a version 3 file without mixture_bits_back; 2 and 3 have flow_chunk = chunk
READABLE = tuple(_FIXED_BY_VERSION)
_MIXTURE_BITS_BACK = 0x01
_CHOSEN_FIRST = 0x02
_SMALL_CHUNKS = 0x04
_EDGE_COVER = 0x08
_SPLIT_VALUES = 0x10
_ZLIB = 0x80  # flag in the variable part's first byte: zlib-compressed
_ZDICT_FLAG = 0x40  # with _ZLIB, from version 6 on: compressed with the preset dictionary _ZDICT
# zlib's preset dictionary for the variable part (part of format 6: never change it). Typical keys, shapes, names
# and group runs, so a short header compresses: a one-digit file's variable part 96 -> 41 bytes
_ZDICT = (b'{"hint":"","images":[[[28,28,1],1]],[[32,32,3],1]],[[64,64,3],"names":{"stem":"_x_test","width":4},'
          b'{"list":[""]},"groups":[[1,1],[2,1],[4,1],[8,1],[16,1],[32,1],[64,"chosen":[[-1,[[0,1]],[[1,1]],'
          b'[[2,1]],"samples":[[mnist-vaefashion-mnist-cifar10-srvae-2lvl')

class CodecError(SelfVAEError):
    """A compressed file that cannot be decoded: damaged, truncated, or for another model or machine."""


@dataclass
class Container:
    header: dict[str, Any]
    words: np.ndarray  # uint32, stack order (bottom first)

    def to_bytes(self) -> bytes:
        head = pack_header(self.header)
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
        if version not in READABLE:
            raise CodecError(f"{name}: file format version {version}; this selfvae reads versions "
                             f"{', '.join(map(str, READABLE))}")
        end = _HEAD.size + n
        if len(data) < end + 4:
            raise CodecError(f"{name}: truncated inside the header ({len(data)} bytes)")
        head = data[_HEAD.size:end]
        if zlib.crc32(head) != struct.unpack_from("<I", data, end)[0]:
            raise CodecError(f"{name}: the header is damaged (checksum mismatch)")
        try:
            header = unpack_header(head, version)
        except (struct.error, zlib.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CodecError(f"{name}: the header cannot be read ({e})") from e
        header["tiles_per_image"] = check_header(header, header["payload_words"], name)
        return header, end + 4

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


def check_header(h: dict[str, Any], payload_words: int, name: str) -> list[int]:
    """Check that a parsed header's fields fit each other and the payload, before any decoding (a crafted
    file with valid checksums is refused here, naming ``name``); returns each image's tile count (the parsed
    header's ``tiles_per_image``)."""
    tile = h["tile"]
    if not all(isinstance(v, int) and v >= 1 for v in tile):
        raise CodecError(f"{name}: the header's tile shape {tile} is not three positive sizes")
    shapes = h["images"]
    if not all(len(s) == 3 and all(isinstance(v, int) and v >= 1 for v in s) and s[2] in (1, tile[0])
               and s[0] * s[1] <= MAX_PIXELS for s in shapes):
        raise CodecError(f"{name}: the header's image sizes are not each height, width and 1 or {tile[0]} "
                         f"channel(s), of at most {MAX_PIXELS} pixels (what compress reads)")
    n_tiles = [rows * cols for rows, cols, _, _ in (tile_grid(s[0], s[1], tile[1], tile[2]) for s in shapes)]
    sizes, samples, chosen = h["groups"], h["samples"], h["chosen"]
    if not all(isinstance(k, int) and k >= 1 for k in sizes):
        raise CodecError(f"{name}: the header's group sizes are not positive counts")
    if len(samples) != len(sizes) or not all(isinstance(k, int) and 1 <= k <= MAX_SAMPLES for k in samples):
        raise CodecError(f"{name}: the header's importance samples are not one count in [1, {MAX_SAMPLES}] for each "
                         f"of its {len(sizes)} groups")
    if len(chosen) != len(sizes) or not all(isinstance(c, int) and -1 <= c <= MAX_PRECISION and (c < 0 or k == 1)
                                            for c, k in zip(chosen, samples, strict=True)):
        raise CodecError(f"{name}: the header's chosen-latent grids are not one value in [-1, {MAX_PRECISION}] for "
                         f"each of its {len(sizes)} groups (with one sample)")
    raw = h["raw"] or [0] * sum(n_tiles)
    if not all(isinstance(f, int) and f in (0, 1) for f in raw):
        raise CodecError(f"{name}: the header's raw-tile flags are not each 0 or 1")
    if len(raw) != sum(n_tiles) or sum(sizes) + sum(raw) != sum(n_tiles):
        raise CodecError(f"{name}: the header's groups hold {sum(sizes)} tiles and its raw tiles {sum(raw)} "
                         f"(of {len(raw)} flags), its images {sum(n_tiles)}")
    names = h["names"]
    if not (isinstance(names, dict) and (
            (isinstance(names.get("list"), list) and len(names["list"]) == len(shapes)
             and all(isinstance(n, str) for n in names["list"]))
            or (isinstance(names.get("stem"), str) and isinstance(names.get("width"), int)
                and 0 <= names["width"] <= 12))):
        raise CodecError(f"{name}: the header's image names are not one name for each of its {len(shapes)} images")
    fb = h["fallback"]
    mosaic = isinstance(fb, dict) and isinstance(fb.get("bytes"), int) and 0 < fb["bytes"] <= 4 * payload_words \
        and isinstance(fb.get("cols"), int) and 1 <= fb["cols"] <= max(1, sum(raw))
    whole = isinstance(fb, dict) and isinstance(fb.get("images"), list) and len(fb["images"]) == len(shapes) \
        and all(isinstance(k, int) and k > 0 for k in fb["images"]) and sum(fb["images"]) <= 4 * payload_words \
        and all(raw)
    if fb is not None and not (fb.get("codec") == "png" and (mosaic or whole)):
        raise CodecError(f"{name}: the header's fallback entry is not a PNG of a size the payload can hold")
    return n_tiles


def _runs(values: list) -> list:
    """Run-length pairs ``[value, count]``."""
    out: list = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def _unruns(pairs: list) -> list:
    return [v for v, k in pairs for _ in range(k)]


def pack_header(h: dict[str, Any]) -> bytes:
    p, lossy = h["params"], h.get("lossy")
    kind = 0 if not lossy else (1 if lossy["precision"] is None else 2)
    fixed = _FIXED.pack(
        bytes.fromhex(h["model"]), bytes.fromhex(h["probe"]), h["crc"], h["payload_words"], h["n_seed"],
        p["precision"], p["flow_precision"], p["flow_noise"], p["chunk"], h["group"], *h["tile"],
        kind, (lossy or {}).get("precision") or 0, 0 if not lossy or lossy["decode"] == "mean" else 1,
        (_MIXTURE_BITS_BACK if p["mixture_bits_back"] else 0) | (_CHOSEN_FIRST if p.get("chosen_first") else 0)
        | (_SMALL_CHUNKS if p.get("small_chunks") else 0) | (_EDGE_COVER if p.get("edge_cover") else 0)
        | (_SPLIT_VALUES if p.get("split_values") else 0),
        p["flow_chunk"],
    )
    fields = {"hint": h.get("hint", ""), "images": _runs([tuple(s) for s in h["images"]]), "names": h["names"],
              "groups": _runs(h["groups"])}
    if any(s > 1 for s in h.get("samples", [])):
        fields["samples"] = _runs(h["samples"])
    if any(g >= 0 for g in h.get("chosen", [])):
        fields["chosen"] = _runs(h["chosen"])
    if any(h.get("raw", [])):
        fields["raw"] = _runs(h["raw"])
        if h.get("fallback"):
            fields["fallback"] = h["fallback"]
    var = json.dumps(fields, separators=(",", ":")).encode()
    packer = zlib.compressobj(9, zdict=_ZDICT)
    packed = packer.compress(var) + packer.flush()
    body = bytes([_ZLIB | _ZDICT_FLAG]) + packed if len(packed) < len(var) else bytes([0]) + var
    return fixed + body


def unpack_header(b: bytes, version: int = VERSION) -> dict[str, Any]:
    fixed = _FIXED_BY_VERSION[version]
    (model, probe, crc, words, seed, prec, fprec, fnoise, chunk, group, c, hh, ww, kind, zprec, decode,
     *later) = fixed.unpack_from(b)
    flags = later[0] if later else 0
    flow_chunk = later[1] if len(later) > 1 else chunk
    rest = b[fixed.size:]
    var = json.loads(_inflate(rest[1:], rest[0]) if rest[0] & _ZLIB else rest[1:])
    groups = _unruns(var["groups"])
    samples = _unruns(var["samples"]) if "samples" in var else [1] * len(groups)
    chosen = _unruns(var["chosen"]) if "chosen" in var else [-1] * len(groups)
    return {
        "version": version, "model": model.hex(), "probe": probe.hex(), "crc": crc, "payload_words": words,
        "n_seed": seed,
        "params": {"precision": prec, "flow_precision": fprec, "flow_noise": fnoise, "chunk": chunk,
                   "mixture_bits_back": bool(flags & _MIXTURE_BITS_BACK), "flow_chunk": flow_chunk,
                   "samples": max(samples, default=1), "chosen_first": bool(flags & _CHOSEN_FIRST),
                   "small_chunks": bool(flags & _SMALL_CHUNKS),
                   "edge_cover": version >= 10 and bool(flags & _EDGE_COVER),
                   "split_values": version >= 11 and bool(flags & _SPLIT_VALUES)},
        "group": group, "tile": [c, hh, ww], "hint": var["hint"],
        "images": [list(s) for s in _unruns(var["images"])], "names": var["names"],
        "groups": groups, "samples": samples, "chosen": chosen,
        "raw": _unruns(var["raw"]) if "raw" in var else [], "fallback": var.get("fallback"),
        "lossy": None if kind == 0 else {"precision": None if kind == 1 else zprec,
                                         "decode": "mean" if decode == 0 else "mode"},
    }


def _inflate(packed: bytes, flags: int) -> bytes:
    if not flags & _ZDICT_FLAG:
        return zlib.decompress(packed)
    unpacker = zlib.decompressobj(zdict=_ZDICT)
    return unpacker.decompress(packed) + unpacker.flush()


def read(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise CodecError(f"{p}: no such file")
    return p.read_bytes()
