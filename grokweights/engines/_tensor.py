"""One output tensor (:class:`OutTensor`) and the bytes each output dtype takes: pure data.

Dtypes: ``f32``, ``f16``, ``bf16``; ggml's block types (``q8_0``, and the K-quants and legacy quants
llama.cpp's quantizer writes: a block of 32 or 256 values of the last axis in a fixed number of bytes);
and the parts of a compressed-tensors ``pack-quantized`` int8 weight (``i8pack``: int32 words each holding
four int8 values offset by 128; ``i64`` for its ``weight_shape``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OutTensor", "tensor_bytes", "GGML_BLOCKS", "Q8_BLOCK", "Q8_BLOCK_BYTES"]

#: values per q8_0 block (ggml's QK8_0) and bytes per block (an f16 scale and 32 int8 values).
Q8_BLOCK, Q8_BLOCK_BYTES = 32, 34
#: ggml block types: (values per block, bytes per block), as ``ggml_type_traits`` (ggml/src/ggml.c) gives them.
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "q2_k": (256, 84), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176), "q6_k": (256, 210),
    "iq4_nl": (32, 18), "iq4_xs": (256, 136),
}
_ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2, "i8pack": 4, "i64": 8}


@dataclass(frozen=True)
class OutTensor:
    """One tensor of the output.

    Attributes:
        name: the target's name.
        shape: numpy (row-major) shape as written; matrices are ``(out, in)`` (``i8pack``: ``(out, in / 4)``).
        dtype: ``f32``, ``bf16``, ``f16``, a ggml block type (``q8_0``, ``q4_k``, ...), or ``i8pack`` / ``i64``.
        source: the checkpoint tensor it comes from (``module/path/param``).
        expert: for one expert of a stacked ``[E, in, out]`` source, its index; None for the whole tensor.
        transpose: whether the last two axes of the source are swapped.
        part: for a compressed-tensors int8 weight, which of its tensors: ``packed``, ``scale`` or ``shape``.
        group: for its ``scale``, the input rows per scale (0: one scale per output channel).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str
    expert: int | None = None
    transpose: bool = False
    part: str | None = None
    group: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's data as written."""
        return tensor_bytes(self.shape, self.dtype)


def tensor_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of a tensor of ``shape`` in ``dtype`` (a ggml block type: its block bytes per block of the last axis)."""
    count = math.prod(shape)
    if dtype in GGML_BLOCKS:
        values, nbytes = GGML_BLOCKS[dtype]
        return count // values * nbytes
    return count * _ITEMSIZE[dtype]
