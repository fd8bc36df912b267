"""chunk_text: spans, heading paths, pages, token counts, hashes."""

from __future__ import annotations

import json
import random
import re
import time
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.documents.chunking import (
    ChunkOut,
    ChunkSettings,
    TokenizerError,
    chunk_text,
    get_tokenizer,
)
from service.documents.dedup import content_hash
from service.documents.parsing import ParsedDocument

# --------------------------------------------------------------------------- factories

WORDS = (  # noqa: SIM905
    "data model train review sample dataset version export token adapter quality label "
    "annotator project upload document chunk prompt answer question system evaluate "
    "metric"
).split()
HANZI = "数据模型训练审核样本版本导出标注项目上传文档问题回答系统评估指标质量中文句子内容安全"


def english_paragraph(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?"]))
    return " ".join(out)


def chinese_paragraph(rng: random.Random, sentences: int) -> str:
    return "".join(
        "".join(rng.choice(HANZI) for _ in range(rng.randint(8, 30))) + rng.choice("。！？；")
        for _ in range(sentences)
    )


def markdown_document(seed: int = 7, sections: int = 12) -> str:
    rng = random.Random(seed)
    parts = ["# Handbook", english_paragraph(rng, 2)]
    for i in range(sections):
        parts.append(f"## Part {i}")
        for j in range(rng.randint(0, 3)):
            parts.append(f"### Topic {i}.{j}")
            paragraph = chinese_paragraph if rng.random() < 0.5 else english_paragraph
            for _ in range(rng.randint(1, 4)):
                parts.append(paragraph(rng, rng.randint(1, 12)))
    return "\n\n".join(parts) + "\n"


def assert_valid_spans(text: str, chunks: list[ChunkOut]) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 <= chunk.char_start < chunk.char_end <= len(text)
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip()
        assert chunk.content_hash == content_hash(chunk.text)
        assert chunk.token_count == get_tokenizer("simple").count(chunk.text)


def assert_covers_all_words(text: str, chunks: list[ChunkOut]) -> None:
    covered = bytearray(len(text))
    for chunk in chunks:
        covered[chunk.char_start : chunk.char_end] = b"\x01" * (chunk.char_end - chunk.char_start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, text[missing[0] : missing[0] + 40]


# --------------------------------------------------------------------------- strategies


@pytest.mark.parametrize("strategy", ["markdown", "recursive"])
@pytest.mark.parametrize("overlap", [0, 100])
def test_character_strategies_spans(strategy: str, overlap: int) -> None:
    text = markdown_document()
    settings = ChunkSettings(strategy=strategy, max_chars=400, overlap=overlap)
    chunks = chunk_text(text, settings)
    assert len(chunks) > 10
    assert_valid_spans(text, chunks)
    assert_covers_all_words(text, chunks)
    assert all(len(c.text) <= 400 for c in chunks)
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)
    if overlap == 0:
        for a, b in pairwise(chunks):
            assert a.char_end <= b.char_start
    else:
        assert any(a.char_end > b.char_start for a, b in pairwise(chunks))


def heading_paths(text: str) -> list[tuple[int, list[str]]]:
    """(offset, full heading path) of every ATX heading, computed independently."""
    out, stack = [], []
    for m in re.finditer(r"^(#+) (.+)$", text, re.MULTILINE):
        level = len(m.group(1))
        stack = [h for h in stack if h[0] < level] + [(level, m.group(2))]
        out.append((m.start(), [title for _, title in stack]))
    return out


def test_markdown_heading_paths() -> None:
    text = markdown_document()
    headings = heading_paths(text)
    chunks = chunk_text(text, ChunkSettings(strategy="markdown", max_chars=400))
    assert_valid_spans(text, chunks)
    assert any(len(c.heading_path) == 3 for c in chunks)
    for chunk in chunks:
        # the path is the deepest heading that contains the whole chunk
        at_start = [path for pos, path in headings if pos <= chunk.char_start][-1]
        inside = [path for pos, path in headings if chunk.char_start < pos < chunk.char_end]
        for path in [at_start, *inside]:
            assert path[: len(chunk.heading_path)] == chunk.heading_path
        if not inside:
            assert chunk.heading_path == at_start


def test_markdown_small_sections_merge_under_common_parent() -> None:
    text = "# A\n\nintro\n\n## A1\n\none\n\n## A2\n\ntwo\n\n# B\n\nthree\n"
    chunks = chunk_text(text, ChunkSettings(strategy="markdown", max_chars=200))
    assert [c.text for c in chunks] == [
        "# A\n\nintro\n\n## A1\n\none\n\n## A2\n\ntwo",
        "# B\n\nthree",
    ]
    assert [c.heading_path for c in chunks] == [["A"], ["B"]]


def test_markdown_large_section_keeps_heading_with_first_piece() -> None:
    body = "Sentence number one is here. " * 40
    text = f"# Title\n\n## Big\n\n{body}\n"
    chunks = chunk_text(text, ChunkSettings(strategy="markdown", max_chars=300))
    assert chunks[0].text == "# Title"
    assert chunks[1].text.startswith("## Big\n\nSentence number one")
    assert all(c.heading_path == ["Title", "Big"] for c in chunks[1:])
    assert all(c.text.endswith(".") for c in chunks[1:])  # cut at sentence ends


def test_parsed_document_headings_and_pages() -> None:
    pages_text = ["Page one text. " * 20, "Page two text. " * 20, "Page three text. " * 20]
    text = "\n\n".join(t.strip() for t in pages_text)
    pages, offset = [], 0
    for number, page in enumerate(pages_text, start=1):
        pages.append((number, offset, offset + len(page.strip())))
        offset += len(page.strip()) + 2
    doc = ParsedDocument(
        text=text, format="pdf", pages=pages, headings=[(1, "Second", pages[1][1])]
    )
    chunks = chunk_text(doc, ChunkSettings(strategy="recursive", max_chars=200))
    assert_valid_spans(text, chunks)
    for chunk in chunks:
        assert chunk.page_start is not None and chunk.page_end is not None
        expected = next(n for n, s, e in pages if s <= chunk.char_start < e + 2)
        assert chunk.page_start == expected
        assert chunk.page_start <= chunk.page_end
        assert chunk.heading_path == (["Second"] if chunk.char_start >= pages[1][1] else [])
    wide = chunk_text(doc, ChunkSettings(strategy="tokens", max_tokens=200))
    assert any(c.page_end > c.page_start for c in wide)


def test_chinese_sentence_boundaries() -> None:
    sentences = [
        f"这是第{i}个句子，内容比较长一些用于测试切分效果" + "。！？；"[i % 4] for i in range(60)
    ]
    text = "".join(sentences)  # one paragraph, no spaces, no newlines
    chunks = chunk_text(text, ChunkSettings(strategy="recursive", max_chars=120))
    assert_valid_spans(text, chunks)
    assert "".join(c.text for c in chunks) == text
    assert all(c.text[-1] in "。！？；" for c in chunks)
    assert all(len(c.text) <= 120 for c in chunks)


def test_english_sentence_boundaries_and_decimals() -> None:
    text = " ".join(f"Item {i} costs 3.{i} dollars! Is that fine? Yes." for i in range(40))
    chunks = chunk_text(text, ChunkSettings(strategy="recursive", max_chars=100))
    assert_valid_spans(text, chunks)
    assert all(c.text[-1] in ".!?" for c in chunks)
    assert not any(c.text.startswith(tuple("0123456789")) for c in chunks)


def test_hard_split_of_unbroken_text() -> None:
    text = "x" * 1000
    chunks = chunk_text(text, ChunkSettings(strategy="recursive", max_chars=300))
    assert [len(c.text) for c in chunks] == [300, 300, 300, 100]
    assert_valid_spans(text, chunks)


def test_token_windows_with_overlap() -> None:
    text = markdown_document(seed=3)
    tokenizer = get_tokenizer("simple")
    spans = list(tokenizer.spans(text))
    chunks = chunk_text(text, ChunkSettings(strategy="tokens", max_tokens=64, overlap=16))
    assert_valid_spans(text, chunks)
    assert all(c.token_count <= 64 for c in chunks)
    assert all(c.token_count == 64 for c in chunks[:-1])
    for i, chunk in enumerate(chunks[:-1]):
        assert chunk.char_start == spans[i * 48][0]
        assert chunk.char_end == spans[i * 48 + 63][1]
    assert chunks[-1].char_end == spans[-1][1]


def test_simple_tokenizer_counts() -> None:
    tokenizer = get_tokenizer("simple")
    assert tokenizer.count("Hello, world!") == 4
    assert tokenizer.count("你好，世界。") == 6
    assert tokenizer.count("GPT-4o 模型 v2.5") == 8  # GPT - 4o 模 型 v2 . 5


def test_hash_ignores_whitespace_differences() -> None:
    a = chunk_text("Same  text\nhere.", ChunkSettings(strategy="recursive"))[0]
    b = chunk_text("Same text here.", ChunkSettings(strategy="recursive"))[0]
    assert a.content_hash == b.content_hash
    assert len(a.content_hash) == 64


def test_empty_and_whitespace_input() -> None:
    for strategy in ("markdown", "recursive", "tokens"):
        assert chunk_text("  \n\n  ", ChunkSettings(strategy=strategy)) == []


# --------------------------------------------------------------------------- settings and tokenizers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "sentences"},
        {"max_chars": 5},
        {"overlap": -1},
        {"overlap": 1500, "max_chars": 2000},
        {"strategy": "tokens", "max_tokens": 100, "overlap": 60},
        {"max_tokens": 0},
        {"tokenizer": "hf:"},
    ],
)
def test_settings_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ChunkSettings(**kwargs)


def test_tiktoken_offline_error_is_clear() -> None:
    try:
        tokenizer = get_tokenizer("cl100k_base")
    except TokenizerError as exc:
        assert "TIKTOKEN_CACHE_DIR" in str(exc)
    else:  # the encoding is cached on this machine: it must then work
        chunks = chunk_text(
            "Hello world. 你好世界。",
            ChunkSettings(strategy="tokens", tokenizer="cl100k_base", max_tokens=4),
        )
        assert chunks and tokenizer.count("Hello world") == 2


def test_hf_tokenizer_json(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    json.loads(path.read_text())
    text = english_paragraph(random.Random(1), 10)
    settings = ChunkSettings(strategy="tokens", tokenizer=f"hf:{path}", max_tokens=10, overlap=2)
    chunks = chunk_text(text, settings)
    assert_covers_all_words(text, chunks)
    for chunk in chunks:
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        assert chunk.token_count <= 10


def test_missing_hf_tokenizer() -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        get_tokenizer("hf:/nonexistent/tokenizer")


# --------------------------------------------------------------------------- speed


def test_markdown_chunking_speed() -> None:
    """A loose floor (the benchmark measures properly): 4 MB of text in well under 4 s."""
    rng = random.Random(11)
    blocks = []
    while sum(len(b) for b in blocks) < 1_500_000:
        blocks.append(f"## Section {len(blocks)}")
        blocks.append(english_paragraph(rng, 8) if len(blocks) % 4 else chinese_paragraph(rng, 8))
    text = "\n\n".join(blocks)
    size = len(text.encode())
    started = time.perf_counter()
    chunks = chunk_text(text, ChunkSettings())
    elapsed = time.perf_counter() - started
    assert chunks
    assert size / elapsed > 1_000_000, f"{size / elapsed / 1e6:.2f} MB/s"


@pytest.mark.parametrize(
    ("size", "overlap"), [(1, 0), (2, 1), (7, 3), (64, 0), (64, 32), (500, 100)]
)
def test_simple_tokenizer_fast_windows_match_generic_loop(size: int, overlap: int) -> None:
    from service.documents.chunking import SimpleTokenizer, _token_windows

    class PlainSimple:  # the same tokens, through the generic per-token path
        name = "plain"
        count = SimpleTokenizer().count
        spans = SimpleTokenizer().spans

    texts = [
        markdown_document(seed=5, sections=4),
        "",
        "  ",
        "one",
        "中文。",
        "a b c d e f g h i j  \n",
    ]
    for text in texts:
        fast = list(_token_windows(text, SimpleTokenizer(), size, overlap))
        generic = list(_token_windows(text, PlainSimple(), size, overlap))  # type: ignore[arg-type]
        assert fast == generic


_ALPHABET = "ab 中文。！？；.!?,，\n\n#`~-|" + "x" * 5


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=_ALPHABET, max_size=600),
    strategy=st.sampled_from(["markdown", "recursive", "tokens"]),
    max_chars=st.integers(16, 120),
    max_tokens=st.integers(1, 40),
    overlap_fraction=st.floats(0, 0.5),
)
def test_invariants_on_arbitrary_text(
    text: str, strategy: str, max_chars: int, max_tokens: int, overlap_fraction: float
) -> None:
    size = max_tokens if strategy == "tokens" else max_chars
    settings = ChunkSettings(
        strategy=strategy,  # type: ignore[arg-type]
        max_chars=max_chars,
        max_tokens=max_tokens,
        overlap=int(size * overlap_fraction),
    )
    chunks = chunk_text(text, settings)
    assert_valid_spans(text, chunks)
    assert_covers_all_words(text, chunks)
    if strategy == "tokens":
        assert all(c.token_count <= max_tokens for c in chunks)
    else:
        assert all(len(c.text) <= max_chars for c in chunks)
