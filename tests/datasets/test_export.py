"""Exports: every format loads with `datasets`, nothing would be dropped by LLaMA-Factory, and
the bytes are reproducible (also after the samples are edited)."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.datasets import export as datasets_export
from service.datasets import service as datasets_service
from service.models import DatasetExport, DatasetVersionItem
from service.samples import formats, validation
from tests.datasets.test_service import (
    build,
    conv,
    edit_sample,
    make_dataset,
    make_document,
    make_sample,
)

TEXT_FORMATS = ("alpaca", "sharegpt", "openai")


@pytest.fixture
def project(db, factories):
    owner = factories.make_user(db)
    p = factories.make_project(db, owner)
    p.owner = owner
    return p


@pytest.fixture
def version(db, project):
    doc = make_document(db, project)
    samples = [make_sample(db, project, conv(i, system=i % 3 == 0, turns=1 + i % 3), document=doc,
                           tags=["t"], provenance={"model": "m1", "template": "qa-v1"},
                           reviewer=project.owner)
               for i in range(30)]
    v = build(db, make_dataset(db, project, name="Contracts FR"), seed=11,
              split={"train": 0.7, "validation": 0.15, "test": 0.15})
    assert v.status == "ready", v.error
    v.samples = samples
    return v


def export(db, version, fmt: str) -> DatasetExport:
    exp, _created = datasets_service.create_export(db, version=version, fmt=fmt)
    db.commit()  # the eager task writes the files after commit
    db.expire_all()
    exp = db.get(DatasetExport, exp.id)
    assert exp.status == "ready", exp.error
    return exp


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frozen(db, version_id: int, split: str) -> list[list[dict]]:
    from sqlalchemy import select

    return list(db.scalars(select(DatasetVersionItem.messages)
                           .where(DatasetVersionItem.version_id == version_id,
                                  DatasetVersionItem.split == split)
                           .order_by(DatasetVersionItem.position)))


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
def test_jsonl_export_loads_with_datasets_and_nothing_would_be_dropped(db, version, fmt, tmp_path):
    import datasets

    exp = export(db, version, fmt)
    folder = Path(exp.path)
    members = exp.files["members"]
    assert set(members) == {"train.jsonl", "validation.jsonl", "test.jsonl", "dataset_info.json",
                            "README.md", "manifest.json"}
    info = json.loads((folder / "dataset_info.json").read_text())
    assert set(info) == {f"contracts_fr_v1_{s}" for s in ("train", "validation", "test")}
    for split in ("train", "validation", "test"):
        name = f"{split}.jsonl"
        raw = (folder / name).read_bytes()
        assert raw.endswith(b"\n") and b"\r\n" not in raw
        assert "«payment» 支付".encode() in raw  # UTF-8 as is, not \u escapes
        loaded = datasets.load_dataset("json", data_files=str(folder / name), split="train",
                                       cache_dir=str(tmp_path / "hf"))
        expected = frozen(db, version.id, split)
        assert len(loaded) == version.counts[split] == len(expected) == members[name]["records"]
        for line, messages in zip(raw.decode().splitlines(), expected):
            record = json.loads(line)
            assert record == formats.convert_out(messages, fmt)
            back = formats.parse_record(record, fmt)
            assert back == messages
            assert validation.llamafactory_would_drop(back) is False
            assert validation.validate_record(record, fmt) == []
        entry = info[f"contracts_fr_v1_{split}"]
        assert entry["file_name"] == name
        assert entry == formats.dataset_info_entry(
            fmt, name, has_system=any(m[0]["role"] == "system" for m in expected),
            has_history=fmt == "alpaca" and any(len(m) > 3 for m in expected))
        # every loaded row converts back to the frozen messages
        for row, messages in zip(loaded, expected):
            row = {k: v for k, v in row.items() if v is not None}
            assert formats.parse_record(row, fmt) == messages
    if fmt == "openai":
        assert info["contracts_fr_v1_train"]["formatting"] == "sharegpt"
        assert info["contracts_fr_v1_train"]["columns"] == {"messages": "messages"}
        assert info["contracts_fr_v1_train"]["tags"]["role_tag"] == "role"


def test_manifest_and_card(db, version, project):
    exp = export(db, version, "openai")
    folder = Path(exp.path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert exp.manifest_sha256 == sha(folder / "manifest.json")
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == sha(folder / name) == exp.files["members"][name]["sha256"]
    assert manifest["counts"] == version.counts
    assert manifest["seed"] == 11 and manifest["split"]["train"] == 0.7
    assert manifest["filter"]["status"] == ["accepted"]
    assert manifest["version"]["built_at"] == version.built_at.isoformat()
    assert manifest["source_documents"] == version.stats["document_ids"]
    assert manifest["generation"] == {"templates": {"template=qa-v1": 30}, "models": {"m1": 30}}
    assert manifest["reviewers"] == [project.owner.email]
    card = (folder / "README.md").read_text()
    assert "Contracts FR — version 1" in card and "path: train.jsonl" in card


def test_reexport_after_editing_samples_is_byte_identical(db, version, project):
    first = export(db, version, "alpaca")
    hashes = {n: sha(Path(first.path) / n) for n in first.files["members"]}
    zip1 = datasets_export.zip_path(first).read_bytes()
    # edit, reject and add samples: the frozen version must not move
    for s in version.samples[:10]:
        edit_sample(db, db.merge(s), conv(500, text="rewritten after the freeze"))
    db.merge(version.samples[10]).status = "rejected"
    make_sample(db, project, conv(777))
    db.commit()
    # export again from scratch: drop the files and the row, then redo it
    shutil.rmtree(Path(first.path).parent)
    db.delete(db.get(DatasetExport, first.id))
    db.commit()
    second = export(db, version, "alpaca")
    assert Path(second.path).is_dir()
    assert {n: sha(Path(second.path) / n) for n in second.files["members"]} == hashes
    assert second.manifest_sha256 == first.manifest_sha256
    assert datasets_export.zip_path(second).read_bytes() == zip1


def test_export_is_idempotent_and_zip_is_deterministic(db, version):
    exp = export(db, version, "sharegpt")
    again, created = datasets_service.create_export(db, version=version, fmt="sharegpt")
    assert not created and again.id == exp.id
    path = datasets_export.zip_path(exp)
    data = path.read_bytes()
    path.unlink()
    assert datasets_export.zip_path(exp).read_bytes() == data
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["train.jsonl", "validation.jsonl", "test.jsonl",
                                               "dataset_info.json", "README.md", "manifest.json"]
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        for i in infos:
            assert hashlib.sha256(zf.read(i)).hexdigest() == exp.files["members"][i.filename]["sha256"]


def test_writing_twice_gives_same_bytes(db, version):
    exp = export(db, version, "openai")
    hashes = {n: m["sha256"] for n, m in exp.files["members"].items()}
    exp.status = "running"
    datasets_export.write_export(db, exp.id)
    db.commit()
    assert {n: m["sha256"] for n, m in exp.files["members"].items()} == hashes
    assert not list(Path(exp.path).parent.glob(".*staging*"))


def test_hf_parquet_export_loads_with_datasets(db, version, tmp_path):
    pytest.importorskip("pyarrow")
    import datasets

    exp = export(db, version, "hf")
    folder = Path(exp.path)
    assert "train.parquet" in exp.files["members"]
    ds = datasets.load_dataset("parquet", data_files={s: str(folder / f"{s}.parquet")
                                                      for s in ("train", "validation", "test")},
                               cache_dir=str(tmp_path / "hf"))
    for split in ("train", "validation", "test"):
        expected = frozen(db, version.id, split)
        assert [r["messages"] for r in ds[split]] == expected
        for r in ds[split]:
            assert validation.llamafactory_would_drop(r["messages"]) is False
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["contracts_fr_v1_train"]["file_name"] == "train.parquet"
    hashes = {n: m["sha256"] for n, m in exp.files["members"].items()}
    exp.status = "running"
    datasets_export.write_export(db, exp.id)
    assert {n: m["sha256"] for n, m in exp.files["members"].items()} == hashes


def test_file_names_are_checked_against_the_manifest(db, version):
    from service.core.errors import NotFound

    exp = export(db, version, "openai")
    assert datasets_export.file_path(exp, "train.jsonl").name == "train.jsonl"
    for bad in ("../../../etc/passwd", "..", "/etc/passwd", "train.jsonl/..", "nope.jsonl",
                ".train.jsonl", "train.jsonl%00"):
        with pytest.raises(NotFound):
            datasets_export.file_path(exp, bad)


def test_empty_splits_are_not_written(db, project):
    for i in range(5):
        make_sample(db, project, conv(i))
    v = build(db, make_dataset(db, project), split={"train": 1, "validation": 0, "test": 0})
    exp = export(db, v, "openai")
    assert sorted(exp.files["members"]) == ["README.md", "dataset_info.json", "manifest.json",
                                            "train.jsonl"]


# --- the OpenAI fast path ---------------------------------------------------------------------

# text, and the separators the writers cut the frozen text at, inside a content
_TRICKY = ["", '},{"role":"user","content":"', '","content":', "\\", '\\"', '"}]\n', "\t",
           '{"role":"assistant","content":', '[{"role":"system","content":"x"},', "\n["]
_content = st.builds(lambda trick, text, i: text[:i] + trick + text[i:], st.sampled_from(_TRICKY),
                     st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                             min_size=1, max_size=40),
                     st.integers(0, 40)).filter(lambda s: s.strip())


@st.composite
def conversations(draw):
    msgs = [{"role": "system", "content": draw(_content)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        msgs += [{"role": "user", "content": draw(_content)},
                 {"role": "assistant", "content": draw(_content)}]
    return msgs


@pytest.mark.nodb
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(convs=st.lists(conversations(), min_size=1, max_size=8))
def test_openai_lines_copied_from_frozen_text_equal_a_full_serialisation(convs, tmp_path_factory):
    """The writers cut and join the frozen text (OpenAI, ShareGPT, Alpaca); the bytes must be
    those of converting and serialising each record (escapes, non-ASCII, control characters,
    system prompts, Alpaca's history)."""
    folder = tmp_path_factory.mktemp("fast")
    for fmt in ("openai", "sharegpt", "alpaca"):
        meta = datasets_export._write_jsonl(folder / f"{fmt}.jsonl", frozen_chunks(convs, fmt),
                                            fmt, lambda k: None)
        expected = b"".join(orjson.dumps(formats.convert_out(m, fmt)) + b"\n" for m in convs)
        assert (folder / f"{fmt}.jsonl").read_bytes() == expected, fmt
        assert meta["records"] == len(convs)
        assert meta["has_system"] == any(m[0]["role"] == "system" for m in convs)
        assert meta["has_history"] == (fmt == "alpaca" and any(len(m) > 3 for m in convs))
        assert meta["sha256"] == hashlib.sha256(expected).hexdigest()


def frozen_chunks(convs, fmt):
    """The conversations as ``iter_frozen`` gives them for ``fmt``: ``(rows, text)`` chunks,
    the frozen texts joined by the format's joiner."""
    texts = [orjson.dumps(formats.to_openai(m)["messages"]) for m in convs]
    half = len(texts) // 2
    joiner = datasets_export.joiner_for(fmt)
    return iter([(len(part), joiner.join(part)) for part in (texts[:half], texts[half:]) if part])


def test_frozen_messages_are_stored_as_canonical_text(db, version):
    """The column holds exactly orjson's text of role/content messages on either database."""
    from sqlalchemy import Text, select, type_coerce

    rows = db.execute(select(type_coerce(DatasetVersionItem.messages, Text), DatasetVersionItem.messages)
                      .where(DatasetVersionItem.version_id == version.id)).all()
    assert len(rows) == 30
    for text, messages in rows:
        assert text == orjson.dumps(messages).decode()
        assert all(list(m) == ["role", "content"] for m in messages)


# --- reading the frozen text back (chunks joined by the database, several readers) -----------


def _tricky_version(db, project):
    tricks = ["back\\slash", 'quote " and \\"', "tab\there", "new\nline", '},{"role":"user","content":"',
              "\\N", "é 付款 \u2028", "ctrl \x01\x7f"]
    for i in range(23):
        make_sample(db, project, conv(i, system=i % 4 == 0, turns=1 + i % 2,
                                      text=f"{tricks[i % len(tricks)]} {i}"))
    v = build(db, make_dataset(db, project), seed=3, split={"train": 0.6, "validation": 0.2, "test": 0.2})
    assert v.status == "ready", v.error
    return v


def _expected(db, version_id: int, split: str, fmt: str) -> bytes:
    return b"".join(orjson.dumps(formats.convert_out(m, fmt)) + b"\n"
                    for m in frozen(db, version_id, split))


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_exports_read_in_small_chunks_by_several_readers_keep_every_byte(db, project, readers,
                                                                         monkeypatch):
    """Chunks of 2 positions (the last one short, splits of odd sizes) read by 1-3 connections
    come out in position order, and every format's file is the full serialisation (backslashes,
    escapes, non-ASCII, the separators inside contents)."""
    v = _tricky_version(db, project)
    monkeypatch.setattr(datasets_export, "READERS", readers)
    monkeypatch.setattr(datasets_export, "BATCH", 2)
    for fmt in TEXT_FORMATS:
        exp = export(db, v, fmt)
        for split in ("train", "validation", "test"):
            assert (Path(exp.path) / f"{split}.jsonl").read_bytes() == _expected(db, v.id, split, fmt)


def test_a_version_other_connections_cannot_see_is_read_on_the_session(db, project):
    """Not ready for the other connections (here: marked building, committed): the chunks are
    read on the session's own connection, and they are the same."""
    v = _tricky_version(db, project)
    readers = {s: list(datasets_export.iter_frozen(db, v.id, s, 3, datasets_export.OPENAI_JOINER))
               for s in ("train", "validation", "test")}
    db.rollback()
    v.status = "building"
    db.commit()
    for split, chunks in readers.items():
        assert list(datasets_export.iter_frozen(db, v.id, split, 3,
                                                datasets_export.OPENAI_JOINER)) == chunks
        rows = frozen(db, v.id, split)
        assert [k for k, _ in chunks] == [min(3, len(rows) - i) for i in range(0, len(rows), 3)]
        assert datasets_export.OPENAI_HEAD + b"".join(
            t if i == 0 else datasets_export.OPENAI_JOINER + t for i, (_, t) in enumerate(chunks)
        ) + b"}\n" == _expected(db, v.id, split, "openai")


def test_gaps_in_positions_are_skipped_in_order(db, project):
    """Positions with holes (items deleted here; a build writes 0..n-1) still come out in order."""
    from sqlalchemy import delete

    v = _tricky_version(db, project)
    db.execute(delete(DatasetVersionItem).where(DatasetVersionItem.version_id == v.id,
                                                DatasetVersionItem.split == "train",
                                                DatasetVersionItem.position.in_([0, 1, 4, 5])))
    db.commit()
    chunks = list(datasets_export.iter_frozen(db, v.id, "train", 2, b"\n"))
    texts = b"\n".join(t for _, t in chunks).split(b"\n")
    assert [orjson.loads(t) for t in texts] == frozen(db, v.id, "train")
    assert sum(k for k, _ in chunks) == len(texts)
