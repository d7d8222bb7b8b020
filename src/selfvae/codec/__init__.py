"""Lossless and progressive image compression with a trained selfVAE: bits-back coding with ANS.

Whole files are :mod:`selfvae.codec.files`; the coding of one group of images :mod:`selfvae.codec.bitsback`
(with chosen latents :mod:`~selfvae.codec.chosen`, importance samples :mod:`~selfvae.codec.importance`, a
quantised lossy ``z`` :mod:`~selfvae.codec.lossy`); the stack coder :mod:`selfvae.codec.ans`; the format
:mod:`selfvae.codec.container` (and ``docs/CODEC.md``); determinism :mod:`selfvae.codec.compute`.
"""

from selfvae.codec.bitsback import CodingParams
from selfvae.codec.container import CodecError
from selfvae.codec.files import Decoded, compress, decompress, model_id, nelbo_bits, read_model_hint
from selfvae.codec.lossy import QuantisedZ

__all__ = ["CodecError", "CodingParams", "Decoded", "QuantisedZ", "compress", "decompress", "model_id",
           "nelbo_bits", "read_model_hint"]
