"""GGUF for llama.cpp's ``grok`` architecture, written with the ``gguf`` package (llama.cpp's own writer).

Metadata keys are those llama.cpp's Grok loader reads (ggml-org/llama.cpp ``src/models/grok.cpp``,
``load_arch_hparams``, and the common keys of ``src/llama-model.cpp``). The header, key/values and tensor
infos go through ``gguf.GGUFWriter``; tensor data is then streamed block by block at the offsets and
alignment the writer laid out (``write_tensor_data`` takes whole tensors, which would not fit in memory
for an expert stack of Grok-1). Split output follows llama.cpp's ``gguf-split`` naming
(``NAME-00001-of-0000N.gguf``) and keys (``split.no``, ``split.count``, ``split.tensors.count``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..checkpoint.config import ModelConfig
from ._directwrite import OutputFile
from ._hfconfig import ATTN_SOFTCAP, CONTEXT_LENGTH, RMS_EPS, ROPE_THETA
from ._kquant import FTYPES
from ._safetensors import write_tensor
from ._tensor import OutTensor
from ._vocab import Vocab

__all__ = ["write_gguf", "split_names", "metadata_writer", "ARCH"]

ARCH = "grok"
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32, **FTYPES}  # gguf.LlamaFileType
#: ``general.quantization_version`` that llama.cpp's quantizer writes (GGML_QNT_VERSION)
_QNT_VERSION = 2


def split_names(path: Path, count: int) -> list[Path]:
    """The files of a ``count``-way split of ``path`` (just ``path`` when ``count`` is 1)."""
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i + 1:05d}-of-{count:05d}.gguf") for i in range(count)]


def _metadata(writer, config: ModelConfig, layers: int, dtype: str, vocab: Vocab) -> None:
    """The key/values llama.cpp's Grok loader reads (and the tokenizer's)."""
    writer.add_name("Grok-1")
    writer.add_file_type(_FILE_TYPE[dtype])
    if dtype in FTYPES:
        writer.add_quantization_version(_QNT_VERSION)
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(config.emb_size)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config.ffn_size)
    writer.add_expert_feed_forward_length(config.ffn_size)
    writer.add_head_count(config.num_q_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_key_length(config.key_size)
    writer.add_value_length(config.key_size)
    writer.add_rope_dimension_count(config.key_size)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_expert_count(config.num_experts)
    writer.add_expert_used_count(config.num_selected_experts)
    writer.add_embedding_scale(config.embedding_multiplier_scale)
    writer.add_logit_scale(config.output_multiplier_scale)
    writer.add_attn_output_scale(config.attn_output_multiplier)
    writer.add_attn_logit_softcapping(ATTN_SOFTCAP)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_unk_token_id(vocab.unk)
    writer.add_pad_token_id(vocab.pad)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _ggml_type(dtype: str):
    from gguf.constants import GGMLQuantizationType

    return GGMLQuantizationType[dtype.upper()]


def metadata_writer(config: ModelConfig, layers: int, dtype: str, vocab: Vocab) -> Callable:
    """``fn(writer)`` adding the export's key/values to a ``gguf.GGUFWriter`` (for llama.cpp's dry run)."""
    return lambda writer: _metadata(writer, config, layers, dtype, vocab)


def _pad(f: OutputFile, align: int) -> None:
    f.write(b"\0" * (-f.tell() % align))


def write_gguf(path: Path, tensors: list[OutTensor], blocks: Callable[[OutTensor], Iterator[Callable]], *,
               config: ModelConfig, layers: int, dtype: str, vocab: Vocab, max_bytes: int,
               on_tensor: Callable[[OutTensor], None] | None = None) -> list[Path]:
    """Write the GGUF file(s) for ``tensors`` at ``path`` (split beyond ``max_bytes``); returns the files."""
    import gguf

    writer = gguf.GGUFWriter(path, ARCH, split_max_size=max_bytes)
    _metadata(writer, config, layers, dtype, vocab)
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=_ggml_type(t.dtype))
    groups = [list(group) for group in writer.tensors]
    files = split_names(path, len(groups))
    writer.write_header_to_file(path)  # opens every split file (the writer names them as split_names does)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.flush()  # the header, key/values and tensor infos; the tensor data goes past the page cache
    by_name = {t.name: t for t in tensors}
    for fout, names, name_of_file in zip(writer.fout, groups, files, strict=True):
        with OutputFile(name_of_file, start=fout.tell()) as f:
            for name in names:
                _pad(f, writer.data_alignment)
                write_tensor(f, by_name[name], blocks(by_name[name]), name_of_file)
                _pad(f, writer.data_alignment)
                if on_tensor is not None:
                    on_tensor(by_name[name])
    writer.close()
    return files
