from pathlib import Path

import pytest

from service.samples.tokens import (
    DEFAULT_TOKENIZER,
    SimpleTokenizer,
    TokenizerUnavailable,
    get_tokenizer,
    message_token_stats,
    summarize,
)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        ("   \n", 0),
        ("Hello, world!", 4),  # Hello , world !
        ("大模型 is big.", 6),  # 大 模 型 is big .
        ("微调LoRA模型", 5),  # 微 调 LoRA 模 型
        ("3.14", 3),  # 3 . 14
        ("snake_case x2", 2),
        ("“预训练—监督微调”", 10),  # “ 预 训 练 — 监 督 微 调 ”: 7 characters + 3 punctuation
        ("カタカナ 한국어", 7),
    ],
)
def test_simple_tokenizer_counts(text: str, count: int) -> None:
    assert SimpleTokenizer().count(text) == count


def test_simple_by_name_is_cached() -> None:
    tok = get_tokenizer("simple")
    assert tok.name == "simple" and tok is get_tokenizer("simple")


def test_default_is_tiktoken_when_it_loads_else_simple() -> None:
    try:
        tiktoken = get_tokenizer(DEFAULT_TOKENIZER)
    except TokenizerUnavailable:  # offline without a cached encoding file
        assert get_tokenizer().name == "simple"
    else:
        assert get_tokenizer().name == "tiktoken:cl100k_base"
        assert tiktoken.count("hello world") == 2
        assert tiktoken.count("<|endoftext|>") > 1  # special tokens are plain text here


def test_unknown_and_unavailable_names() -> None:
    with pytest.raises(ValueError):
        get_tokenizer("bpe")
    with pytest.raises(ValueError):
        get_tokenizer("tiktoken:")
    with pytest.raises(TokenizerUnavailable):
        get_tokenizer("tiktoken:no_such_encoding")
    with pytest.raises(TokenizerUnavailable):
        get_tokenizer("hf:/nonexistent/tokenizer/folder")


@pytest.mark.ml
def test_local_hf_tokenizer(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="[UNK]"
    ).save_pretrained(tmp_path)
    from service.core.config import get_settings

    monkeypatch.setattr(get_settings(), "hf_tokenizers", {"tiny": str(tmp_path)})
    tok = get_tokenizer("hf:tiny")  # by the operator's name, never by path
    assert tok.name == "hf:tiny"
    assert tok.count("hello world again") == 3  # no special tokens added


def test_message_token_stats() -> None:
    messages = [
        {"role": "system", "content": "你是助手"},  # 4
        {"role": "user", "content": "What is LoRA?"},  # What is LoRA ? = 4
        {"role": "assistant", "content": "低秩适配。"},  # 低 秩 适 配 。 = 5
        {"role": "user", "content": "QLoRA 呢"},  # QLoRA 呢 = 2
        {"role": "assistant", "content": "4-bit 量化"},  # 4 - bit 量 化 = 5
    ]
    assert message_token_stats(messages, SimpleTokenizer()) == {"total": 20, "assistant": 10}


def test_summarize_nearest_rank_p95() -> None:
    assert summarize([]) == {"min": None, "mean": None, "p95": None, "max": None, "count": 0}
    assert summarize([7]) == {"min": 7, "mean": 7.0, "p95": 7, "max": 7, "count": 1}
    # n=20: rank ceil(0.95 * 20) = 19 -> the 19th smallest
    assert summarize(range(20, 0, -1)) == {
        "min": 1,
        "mean": 10.5,
        "p95": 19,
        "max": 20,
        "count": 20,
    }
    # n=21: rank ceil(19.95) = 20
    assert summarize(range(1, 22))["p95"] == 20
    # n=100: rank 95; n=10: rank ceil(9.5) = 10, the maximum
    assert summarize(range(1, 101))["p95"] == 95
    assert summarize([1, 1, 1, 1, 1, 1, 1, 1, 1, 50])["p95"] == 50
    assert summarize(iter([3, 1, 2]))["mean"] == 2.0
