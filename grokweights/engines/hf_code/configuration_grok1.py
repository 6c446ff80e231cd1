"""Grok-1's configuration for ``transformers`` (written by grokweights; copied beside an ``export --format hf``).

The field names are those of the hpcai-tech ``Grok1Config`` that vLLM and SGLang read, so the same
``config.json`` serves the engines, hpcai-tech's code and this one.
"""

from transformers import PretrainedConfig


class Grok1Config(PretrainedConfig):
    """Grok-1's hyper-parameters (defaults: the released model)."""

    model_type = "grok-1"

    def __init__(self, vocab_size=131072, hidden_size=6144, intermediate_size=32768, num_hidden_layers=64,
                 num_attention_heads=48, num_key_value_heads=8, head_dim=128, num_experts=8, num_experts_per_tok=2,
                 rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=8192,
                 embedding_multiplier_scale=78.38367176906169, output_multiplier_scale=0.5773502691896257,
                 attn_output_multiplier=0.08838834764831845, max_attn_value=30.0, tie_word_embeddings=True,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.embedding_multiplier_scale = embedding_multiplier_scale
        self.output_multiplier_scale = output_multiplier_scale
        self.attn_output_multiplier = attn_output_multiplier
        self.max_attn_value = max_attn_value
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
