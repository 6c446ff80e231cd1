"""The encoder must produce exactly CPython's pickle bytes; the parser must accept exactly those."""

import io
import pickle
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import pytest

from grokweights.checkpoint import pickle_desc as pd
from grokweights.checkpoint import pickle_encode as pe
from grokweights.checkpoint import pickle_parse as pp
from grokweights.errors import ShardFormatError


@dataclass
class QuantizedWeight8bit:  # the upstream class, as the upstream loader defines it in __main__
    weight: object
    scales: object


QuantizedWeight8bit.__module__ = "__main__"


@pytest.fixture(autouse=True)
def _main_class(monkeypatch):
    import __main__

    monkeypatch.setattr(__main__, "QuantizedWeight8bit", QuantizedWeight8bit, raising=False)


def _bytes(desc, arrays, module):
    return b"".join(s if isinstance(s, bytes) else arrays[s].tobytes() for s in pe.encode(desc, numpy_module=module))


@pytest.mark.parametrize("shape", [(6,), (6144,), (16383,), (16384,), (100_000,), (300, 7), (8, 64, 344), ()])
@pytest.mark.parametrize("dtype", [np.float32, np.int8, ml_dtypes.bfloat16])
def test_array_stream_equals_cpython_pickle(shape, dtype):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal(shape)).astype(dtype)
    expected = pickle.dumps(a, protocol=4)  # this numpy spells numpy._core
    assert _bytes(pd.ArrayDesc(a.shape, a.dtype), [a], pd.NUMPY2_MODULE) == expected


@pytest.mark.parametrize("wshape,sshape", [((4, 3), (1, 3)), ((64, 64), (8, 64)), ((8, 344, 64), (8, 8, 64)),
                                           ((200, 200), (8, 200)), ((300, 300), (300, 300))])
def test_quantized_stream_equals_cpython_pickle(wshape, sshape):
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 127, wshape).astype(np.int8)
    s = rng.standard_normal(sshape).astype(ml_dtypes.bfloat16)
    desc = pd.QuantizedDesc(pd.ArrayDesc(w.shape, w.dtype), pd.ArrayDesc(s.shape, s.dtype))
    assert _bytes(desc, [w, s], pd.NUMPY2_MODULE) == pickle.dumps(QuantizedWeight8bit(w, s), protocol=4)


def test_numpy1_spelling_is_one_byte_shorter_per_array_and_loads_with_pickle():
    w = np.arange(12, dtype=np.int8).reshape(4, 3)
    s = np.ones((1, 3), ml_dtypes.bfloat16)
    desc = pd.QuantizedDesc(pd.ArrayDesc(w.shape, w.dtype), pd.ArrayDesc(s.shape, s.dtype))
    old = _bytes(desc, [w, s], pd.NUMPY1_MODULE)
    new = _bytes(desc, [w, s], pd.NUMPY2_MODULE)
    assert len(new) - len(old) == 1  # the global is memoised: spelled once
    assert b"numpy.core.multiarray" in old
    loaded = pickle.loads(old)  # what the upstream loader does
    np.testing.assert_array_equal(loaded.weight, w)


@pytest.mark.parametrize("module", [pd.NUMPY1_MODULE, pd.NUMPY2_MODULE])
def test_parse_records_payload_offsets(module):
    a = np.arange(70_000, dtype=np.float32)
    data = _bytes(pd.ArrayDesc(a.shape, a.dtype), [a], module)
    parsed = pp.parse(io.BytesIO(data), path="mem", size=len(data))
    assert parsed.kind == "array" and parsed.numpy_module == module
    ref = parsed.arrays[0].payload
    assert data[ref.offset:ref.offset + ref.nbytes] == a.tobytes()


def test_encoded_size_matches_written_bytes():
    desc = pd.QuantizedDesc(pd.ArrayDesc((8, 64, 344), np.dtype(np.int8)),
                            pd.ArrayDesc((8, 1, 344), np.dtype(ml_dtypes.bfloat16)))
    w = np.zeros((8, 64, 344), np.int8)
    s = np.zeros((8, 1, 344), ml_dtypes.bfloat16)
    assert pe.encoded_size(desc) == len(_bytes(desc, [w, s], pd.NUMPY1_MODULE))


def test_unsupported_dtype_is_refused_by_the_encoder():
    with pytest.raises(ShardFormatError, match="cannot be written"):
        pe.encode(pd.ArrayDesc((2,), np.dtype("complex64")))
