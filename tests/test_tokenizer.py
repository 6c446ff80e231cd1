"""The SentencePiece tokenizer wrapper, with a tiny model trained at test time."""

from __future__ import annotations

import io

import pytest
import sentencepiece

from grokweights.errors import ConfigError, UsageError
from grokweights.model.tokenizer import Tokenizer, parse_token_ids

CORPUS = [
    "the weights of the model are verified before they are resharded",
    "a smoke test runs the forward pass on every device of the mesh",
    "experts are chosen by the router and the top two gates are kept",
    "rotary embeddings turn the queries and keys by their position",
    "the checkpoint is read from memory maps and never unpickled",
] * 20


def train_tokenizer(path, vocab_size: int = 120) -> None:
    """Train a tiny SentencePiece model (pad 0, unk 1, bos 2, eos 3, as Grok-1's ids) into ``path``."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2)
    path.write_bytes(model.getvalue())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tiny.model"
    train_tokenizer(path)
    return path


def test_round_trip(model_file):
    tok = Tokenizer(model_file)
    assert tok.vocab_size == 120
    ids = tok.encode("the router keeps the top two experts")
    assert ids and all(4 <= i < 120 for i in ids)  # no pad, unk, bos or eos
    assert tok.decode(ids) == "the router keeps the top two experts"
    assert tok.piece(ids[0]) == tok.decode(ids[:1])
    assert tok.piece(0) == "<pad>" and tok.piece(500) == "<id 500>"


def test_vocab_must_fit_the_model(model_file):
    tok = Tokenizer(model_file)
    tok.check_fits(512)
    with pytest.raises(ConfigError, match="120 pieces but the model's vocabulary is 64"):
        tok.check_fits(64)


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(UsageError, match="tokenizer file not found.*--tokens"):
        Tokenizer(tmp_path / "absent.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(UsageError, match="bad.model: not a SentencePiece model"):
        Tokenizer(bad)


def test_parse_token_ids():
    assert parse_token_ids("1,2,3") == [[1, 2, 3]]
    assert parse_token_ids("1, 2;3 4") == [[1, 2], [3, 4]]
    with pytest.raises(UsageError, match="one length"):
        parse_token_ids("1,2;3")
    with pytest.raises(UsageError, match="non-negative integers"):
        parse_token_ids("1,-2")
    with pytest.raises(UsageError, match="non-negative integers"):
        parse_token_ids("")
