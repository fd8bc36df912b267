"""redact: personal data in Chinese and English text, and no false positives on numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.documents.redaction import (
    PLACEHOLDERS,
    Redaction,
    find_pii,
    redact,
    redact_document,
    redacted_offset,
)

# --------------------------------------------------------------------------- factories

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id(first17: str) -> str:
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS))
    return first17 + "10X98765432"[total % 11]


def luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        digits = prefix + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError


def luhn_invalid(valid: str) -> str:
    return valid[:-1] + str((int(valid[-1]) + 1) % 10)


ID_X = cn_id("11010519491231002")  # ends in X
ID_2 = cn_id("44030419900307123")
CARD_16 = luhn_complete("622202123456789")
CARD_19 = luhn_complete("621700000000000000")
VISA = "4111111111111111"


def types_and_originals(text: str) -> list[tuple[str, str]]:
    return [(r.type, r.original) for r in find_pii(text)]


# --------------------------------------------------------------------------- tests


def test_chinese_text() -> None:
    text = (
        f"客户张三，手机13812345678，备用 +86 139-0000-1111，座机010-62345678，"
        f"邮箱zhang.san@example.com。身份证号{ID_X}，银行卡号{CARD_16}，"
        f"登录IP 192.168.10.25。"
    )
    redacted, found = redact(text)
    assert redacted == (
        "客户张三，手机[PHONE]，备用 [PHONE]，座机[PHONE]，"
        "邮箱[EMAIL]。身份证号[CN_ID]，银行卡号[BANK_CARD]，"
        "登录IP [IP]。"
    )
    assert [(r.type, r.original) for r in found] == [
        ("PHONE", "13812345678"),
        ("PHONE", "+86 139-0000-1111"),
        ("PHONE", "010-62345678"),
        ("EMAIL", "zhang.san@example.com"),
        ("CN_ID", ID_X),
        ("BANK_CARD", CARD_16),
        ("IP", "192.168.10.25"),
    ]
    for r in found:
        assert text[r.start : r.end] == r.original


def test_english_text() -> None:
    text = (
        "Contact Jane at jane.doe+work@mail.example.co.uk or (415) 555-2671, "
        "+44 20 7946 0958, or 212.555.0147. "
        f"Card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} expires soon. "
        "Server 10.0.0.1 and 2001:db8:85a3::8a2e:370:7334."
    )
    redacted, found = redact(text)
    assert redacted == (
        "Contact Jane at [EMAIL] or [PHONE], [PHONE], or [PHONE]. "
        "Card [BANK_CARD] expires soon. Server [IP] and [IP]."
    )
    assert [r.type for r in found] == ["EMAIL", "PHONE", "PHONE", "PHONE", "BANK_CARD", "IP", "IP"]


@pytest.mark.parametrize(
    "text",
    [
        "会议于2024-03-15 14:30:00召开，2024年3月15日，共有1,234,567人参加。",
        "Order 20231015123 shipped on 2023/10/15; total $12,345.67 (about ¥88,888.00).",
        "Version 1.2.3 released; see section 4.5.6 and RFC 2616, ISBN 978-7-111-54742-6.",
        "编号 123456789012，邮编 100080，工号 00123，金额 15000 元，订单号 NO.20240102-0001。",
        "Times 12:30, 12:30:45; ratio 3:2; MAC 00:1A:2B:3C:4D:5E; C++ std::vector and a::b.",
        "Population 1409517397 and 8045311447 people; pi is 3.14159265358979.",
        "Phone-like but invalid: 12345678901, 10012345678, 555-0100.",
        "Invalid id 110105194912310021 and invalid card " + luhn_invalid(CARD_16) + ".",
        "Email-ish: user@localhost, @handle, name@, a@b.",
        "Not an IP: 256.1.1.1 and 1.2.3 and 192.168.1.",
    ],
)
def test_no_false_positives(text: str) -> None:
    assert find_pii(text) == []


MOBILE_ID = cn_id("11010519900307123")  # 18-digit ID; digits 7-17 read 199 0030 7123
TS_MS = "1713812345678"  # a Unix timestamp in milliseconds (April 2024)
MOBILE_CASES = [
    # (text, the PHONE spans expected)
    ("手机13812345678，", ["13812345678"]),
    ("call 13812345678.", ["13812345678"]),  # full stop, not a decimal point
    ("+86 138 1234 5678", ["+86 138 1234 5678"]),
    ("+8613812345678", ["+8613812345678"]),
    ("0086-138-1234-5678", ["0086-138-1234-5678"]),
    ("0086 13812345678", ["0086 13812345678"]),
    ("(+86) 139-0000-1111", ["(+86) 139-0000-1111"]),
    ("86 13812345678", ["86 13812345678"]),
    ("138-1234-5678 或 139 0000 1111", ["138-1234-5678", "139 0000 1111"]),
    ("13812345678,13912345678", ["13812345678", "13912345678"]),
    ("电话：１３８１２３４５６７８", ["１３８１２３４５６７８"]),  # full-width digits
    ("tel:19912345678)", ["19912345678"]),
    # negatives: the mobile-like run is part of something longer
    ("订单号2024013812345678", []),
    ("订单号 SO-2024-13812345678", []),
    ("invoice INV13812345678", []),
    ("批次 2024-13812345678-01", []),
    ("金额 13800138000.5 元", []),
    ("金额 ¥13800138000", []),
    ("amount $ 13800138000", []),
    ("ratio 0.13812345678", []),
    ("version 2024.13812345678", []),
    (f"timestamp {TS_MS} ms", []),
    (f"ts={TS_MS}", []),
    ("1381234567890123", []),  # a 16-digit run
    ("138123456789", []),  # 12 digits
    ("138 1234 5678 9012", []),  # four groups: a longer grouped number
    ("２０２４１３８１２３４５６７８", []),  # full-width digits, longer run
    (f"身份证号 {MOBILE_ID}", None),  # an ID card, not a phone (checked below)
    ("身份证号 110105199003071230", []),  # checksum wrong: no ID, and still no phone inside
]


@pytest.mark.parametrize(("text", "phones"), MOBILE_CASES)
def test_chinese_mobile_digit_boundaries(text: str, phones: list[str] | None) -> None:
    found = types_and_originals(text)
    if phones is None:
        assert found == [("CN_ID", MOBILE_ID)]
    else:
        assert found == [("PHONE", phone) for phone in phones]


def test_mobile_run_inside_id_number_is_really_mobile_like() -> None:
    assert MOBILE_ID[6:17] == "19900307123"
    assert types_and_originals(MOBILE_ID[6:17]) == [("PHONE", "19900307123")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("座机 010-62345678-8001。", [("PHONE", "010-62345678-8001")]),  # with extension
        ("编号 12-010-22345678", []),
        ("call 415.555.2671", [("PHONE", "415.555.2671")]),
        ("build 10.415.555.2671", []),
        (f"card {VISA}.", [("BANK_CARD", VISA)]),
        (f"amount {VISA}.50", []),
        (f"ratio 0.{VISA}", []),
        (f"ref ORD-2024-{VISA}", []),
        ("order 2024010112345678", []),  # Luhn-valid, but no card starts 2024
        (f"id {ID_2}.", [("CN_ID", ID_2)]),
        (f"ref {ID_2}.5", []),
        ("mail bob@example.com: see below", [("EMAIL", "bob@example.com")]),
        ("mailto:bob@example.com", [("EMAIL", "bob@example.com")]),
        ("https://x.example/share?to=bob@example.com", [("EMAIL", "bob@example.com")]),
        ("ftp://anonymous@ftp.example.org/pub", []),
        ("https://deploy:s3cret@db.example.com/x", [("URL_CREDENTIALS", "deploy:s3cret")]),
        ("postgresql://app:p%40ss@10.0.0.5:5432/db",
         [("URL_CREDENTIALS", "app:p%40ss"), ("IP", "10.0.0.5")]),
        ("git clone git@github.com:org/repo.git", []),
        ('<img src="img/logo@2x.png">', []),
    ],
)
def test_other_detectors_respect_boundaries(text: str, expected: list[tuple[str, str]]) -> None:
    assert types_and_originals(text) == expected


def test_invalid_id_birth_date_rejected() -> None:
    bad_date = cn_id("11010519490231002")  # 31 February, checksum correct
    assert find_pii(f"身份证 {bad_date}") == []
    assert types_and_originals(f"身份证 {ID_2}") == [("CN_ID", ID_2)]
    assert types_and_originals(f"id: {ID_X.lower()}") == [("CN_ID", ID_X.lower())]


def test_bank_card_formats() -> None:
    grouped = " ".join(CARD_19[i : i + 4] for i in range(0, 19, 4))
    dashed = "-".join(VISA[i : i + 4] for i in range(0, 16, 4))
    assert types_and_originals(f"卡号{grouped}。") == [("BANK_CARD", grouped)]
    assert types_and_originals(f"card {dashed}.") == [("BANK_CARD", dashed)]
    followed = " ".join(CARD_16[i : i + 4] for i in range(0, 16, 4)) + " 2024"
    assert types_and_originals(f"卡 {followed}年") == [("BANK_CARD", followed[:-5])]
    mixed = f"{VISA[:4]} {VISA[4:8]}-{VISA[8:12]} {VISA[12:]}"
    assert find_pii(mixed) == []


def test_id_wins_over_card_and_email_over_phone() -> None:
    both = cn_id("51010819900101123")
    assert types_and_originals(both) == [("CN_ID", both)]
    assert types_and_originals("13812345678@163.com") == [("EMAIL", "13812345678@163.com")]


def test_ipv6_variants() -> None:
    for address in (
        "::1ab",
        "fe80::1ff:fe23:4567:890a",
        "::ffff:192.168.1.1",
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
    ):
        assert types_and_originals(f"addr {address}.") == [("IP", address)]


def test_type_selection_and_unknown_type() -> None:
    text = "mail a@example.com phone 13812345678"
    redacted, found = redact(text, types=["EMAIL"])
    assert redacted == "mail [EMAIL] phone 13812345678"
    assert found == [Redaction("EMAIL", 5, 18, "a@example.com")]
    with pytest.raises(ValueError, match="unknown PII types"):
        redact(text, types=["SSN"])


def test_redaction_is_idempotent_on_random_text() -> None:
    rng = random.Random(0)
    words = ["数据", "model", "2024", "v1.2", "12:30", "¥300", "第3章", "page", "15%", "ID"]
    text = " ".join(rng.choice(words) for _ in range(5000))
    assert find_pii(text) == []
    redacted, _ = redact(f"{text} {ID_X} {text}")
    assert redact(redacted)[0] == redacted


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 -+.:@()abcXx电话号", max_size=200))
def test_redactions_are_consistent(text: str) -> None:
    redacted, found = redact(text)
    rebuilt, cursor = [], 0
    for item in found:
        assert text[item.start : item.end] == item.original
        assert item.start >= cursor
        rebuilt.append(text[cursor : item.start] + PLACEHOLDERS[item.type])
        cursor = item.end
    assert "".join(rebuilt) + text[cursor:] == redacted


def test_redact_document_moves_pages_and_headings() -> None:
    from service.documents.chunking import ChunkSettings, chunk_text
    from service.documents.parsing import ParsedDocument

    page1 = "# 联系方式\n\n电话13812345678，邮箱 a.b@example.com。"
    page2 = f"## Card\n\nCard {VISA} and id {ID_X}."
    text = page1 + "\n\n" + page2
    start2 = len(page1) + 2
    doc = ParsedDocument(
        text=text,
        format="pdf",
        pages=[(1, 0, len(page1)), (2, start2, len(text))],
        headings=[(1, "联系方式", 0), (2, "Card", start2)],
    )
    redacted, found = redact_document(doc)
    assert redacted.text == redact(text)[0]
    assert len(found) == 4
    (_, s1, e1), (_, s2, e2) = redacted.pages
    assert redacted.text[s1:e1] == "# 联系方式\n\n电话[PHONE]，邮箱 [EMAIL]。"
    assert redacted.text[s2:e2] == "## Card\n\nCard [BANK_CARD] and id [CN_ID]."
    for level, title, offset in redacted.headings:
        assert redacted.text[offset:].startswith("#" * level + " " + title)
    assert doc.text == text  # the original is untouched
    for chunk in chunk_text(redacted, ChunkSettings(max_chars=40)):
        assert chunk.text == redacted.text[chunk.char_start : chunk.char_end]
        assert chunk.page_start == (1 if chunk.char_start < s2 else 2)


def test_redacted_offset_inside_a_replaced_span() -> None:
    text = "call 13812345678 now"
    redacted, found = redact(text)
    assert redacted == "call [PHONE] now"
    assert redacted_offset(found, 0) == 0
    assert redacted_offset(found, 5) == 5
    assert redacted_offset(found, 8) == 5
    assert redacted_offset(found, 8, side="end") == 12
    assert redacted_offset(found, 16) == 12
    assert redacted_offset(found, 17) == 13


def test_removed_pdf_header_examples_are_redacted_too() -> None:
    """Running headers removed from PDF pages are kept as examples in the metadata, which is
    stored: when only redacted text may be stored, they are redacted as well."""
    from service.documents.parsing import ParsedDocument

    doc = ParsedDocument(
        text="Body text.",
        format="pdf",
        pages=[(1, 0, 10)],
        metadata={"pdf_cleanup": {"furniture_examples": ["Ask jane.doe@example.org 3 / 9"]}},
    )
    redacted, _ = redact_document(doc)
    assert redacted.metadata["pdf_cleanup"]["furniture_examples"] == ["Ask [EMAIL] 3 / 9"]
    assert doc.metadata["pdf_cleanup"]["furniture_examples"] == ["Ask jane.doe@example.org 3 / 9"]
