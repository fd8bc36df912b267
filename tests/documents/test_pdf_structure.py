"""Where a PDF's sections start and how its wrapped lines join: bookmarks placed on the line of
their title (not at the top of the page they point to), and Chinese line wraps joined although
a page holds a line wider than its text column. On synthetic text, and on a real manual that
the test fetches from Debian (maint-guide-zh-cn, GPL-2+) where the archive answers."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from service.documents import pdf
from service.documents.chunking import chunk_text
from service.documents.parsing import parse_document

IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff"
WRAP_INSIDE_TEXT = re.compile(f"[{IDEOGRAPHS}]\n[{IDEOGRAPHS}]")


def _pages(*texts: str) -> tuple[str, list[tuple[int, int, int]]]:
    pages, length = [], 0
    for number, text in enumerate(texts, start=1):
        if number > 1:
            length += 2
        pages.append((number, length, length + len(text)))
        length += len(text)
    return "\n\n".join(texts), pages


def test_two_sections_on_one_page_each_start_at_their_own_line():
    page1 = "Chapter 1\nIntro text that mentions Where to ask for help in passing.\n"
    page2 = ("end of the intro paragraph.\n1.3. Development documents\nRead the policy.\n"
             "1.4 Where to ask for help\nMailing lists.")
    text, pages = _pages(page1, page2)
    outline = [(1, "Chapter 1", 0), (2, "1.3 Development documents", 1),
               (2, "Where to ask for help", 1), (2, "A figure's bookmark", 1)]
    headings = pdf.place_headings(text, pages, outline)
    where = {title: text[offset:text.index("\n", offset) if "\n" in text[offset:] else None]
             for _level, title, offset in headings}
    assert where["Chapter 1"] == "Chapter 1"
    assert where["1.3 Development documents"] == "1.3. Development documents"  # "1.3." vs "1.3"
    # the mention inside a sentence on page 1 is not the heading; the line on page 2 is
    assert where["Where to ask for help"] == "1.4 Where to ask for help"
    # a title the page does not show keeps the page's start, in outline order among equals
    assert next(o for _l, t, o in headings if t == "A figure's bookmark") == pages[1][1]
    assert [o for _l, _t, o in headings] == sorted(o for _l, _t, o in headings)


def test_chinese_titles_and_a_title_repeated_on_a_page_are_found_in_order():
    page = "2.1 设置\n正文。\n2.2 设置\n正文。"
    text, pages = _pages(page)
    headings = pdf.place_headings(text, pages, [(2, "设置", 0), (2, "设置", 0)])
    assert [text[o:o + 6] for _l, _t, o in headings] == ["2.1 设置", "2.2 设置"]


def test_chinese_wraps_join_despite_one_overlong_line():
    column = "这是一个很长的中文段落它在排版时被折行了所以每一行都几乎一样宽"  # 32 ideographs
    url = "参见 http://www.example.org/" + "a" * 120
    page = "\n".join([column, column, "结尾", url, column + "注意", "essential 软件包", "• 列表项"])
    joined = pdf.join_cjk_wraps(page)
    assert WRAP_INSIDE_TEXT.search(joined.split(url)[0]) is None  # the column's wraps joined
    assert "宽这是" in joined and "宽结尾" in joined
    assert "注意 essential" in joined  # an ideograph then a Latin word: one space
    assert "\n• 列表项" in joined  # a bullet starts its own line


def _debian_file(tmp_path_factory: pytest.TempPathFactory, package: str, member: str) -> Path:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("needs apt-get and dpkg-deb (Debian)")
    folder = tmp_path_factory.mktemp(package)
    try:
        subprocess.run(["apt-get", "download", package], cwd=folder, check=True,
                       capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"Debian's archive did not answer: {exc}")
    deb = next(folder.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "x")], check=True)
    return folder / "x" / member


@pytest.fixture(scope="module")
def maint_guide_zh(tmp_path_factory):
    path = _debian_file(tmp_path_factory, "maint-guide-zh-cn",
                        "usr/share/doc/maint-guide-zh-cn/maint-guide.zh-cn.pdf")
    doc = parse_document(path, filename=path.name)
    return doc, chunk_text(doc)


def test_real_chinese_manual_sections_and_wraps(maint_guide_zh):
    doc, chunks = maint_guide_zh
    starts = {start for _n, start, _e in doc.pages}
    inside = [h for h in doc.headings if h[2] not in starts]
    assert len(doc.headings) > 50 and len(inside) > 0.75 * len(doc.headings)
    # section 1.3 starts mid-page: its chunk begins with its own heading line, under its path
    section = next(c for c in chunks if c.text.startswith("1.3 需要的开发文档"))
    assert section.heading_path[-1] == "需要的开发文档"
    assert not any("1.3 需要的开发文档" in c.text for c in chunks
                   if c.heading_path and c.heading_path[-1] == "到何处求助")
    # line wraps inside running Chinese text are joined (was 235 in 29,969 ideographs)
    ideographs = len(re.findall(f"[{IDEOGRAPHS}]", doc.text))
    assert len(WRAP_INSIDE_TEXT.findall(doc.text)) < 0.0025 * ideographs
