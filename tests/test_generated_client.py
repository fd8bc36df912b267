"""A client generated from the OpenAPI document works against the real app: the models that
datamodel-code-generator writes from ``/openapi.json`` create a project, upload a document and
list samples (requests built from the generated request models, answers validated by the
generated response models, errors by ``ErrorResponse``)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

codegen = pytest.importorskip("datamodel_code_generator")

DOC = (b"# LoRA notes\n\nLoRA adapts a model with low-rank matrices.\n\n"
       b"## QLoRA\n\nQLoRA trains the adapter on a 4-bit base model.\n")


@pytest.fixture(scope="module")
def models(app, tmp_path_factory):
    """The generated module (pydantic v2 models), built from the app's own document."""
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        spec = c.get("/openapi.json").text
    out = tmp_path_factory.mktemp("generated") / "annotune_models.py"
    codegen.generate(spec, input_file_type=codegen.InputFileType.OpenAPI, output=out,
                     output_model_type=codegen.DataModelType.PydanticV2BaseModel,
                     target_python_version=codegen.PythonVersion.PY_311,
                     use_standard_collections=True, use_union_operator=True,
                     formatters=[codegen.Formatter.BUILTIN])
    found = importlib.util.spec_from_file_location("annotune_models", out)
    module = importlib.util.module_from_spec(found)
    sys.modules["annotune_models"] = module
    found.loader.exec_module(module)
    yield module
    sys.modules.pop("annotune_models", None)


def _json(model) -> dict:
    # warnings: the generated defaults are plain strings where the field is an enum
    return model.model_dump(mode="json", exclude_none=True, warnings=False)


def test_the_generated_models_name_every_shape(models):
    for name in ("ProjectCreate", "ProjectRead", "UploadDocumentsForm", "UploadResponse",
                 "DocumentRead", "DocumentStatus", "SampleCreate", "SampleReadPage",
                 "SampleStatus", "ErrorResponse", "DatasetVersionRead", "PreferenceVersionRead",
                 "BulkJobStarted", "EvalComparison"):
        assert hasattr(models, name), name
    assert {s.value for s in models.SampleStatus} == {"pending", "accepted", "rejected",
                                                        "needs_changes"}
    assert "files" in models.UploadDocumentsForm.model_fields


def test_a_generated_client_creates_uploads_and_lists(client, db, factories, models):
    actor = factories.make_actor(db)
    headers = actor.headers
    created = client.post("/api/v1/projects", headers=headers,
                          json=_json(models.ProjectCreate(name="generated", description="x")))
    assert created.status_code == 201, created.text
    project = models.ProjectRead.model_validate(created.json())
    assert project.name == "generated"
    base = f"/api/v1/projects/{project.id}"

    upload = client.post(f"{base}/documents", headers=headers,
                         files=[("files", ("lora.md", DOC, "text/markdown"))])
    assert upload.status_code == 201, upload.text
    (result,) = models.UploadResponse.model_validate(upload.json()).results
    assert result.status_code == 201 and result.document_id
    doc = models.DocumentRead.model_validate(
        client.get(f"{base}/documents/{result.document_id}", headers=headers).json())
    assert doc.status == models.DocumentStatus.parsed and doc.chunk_count >= 1  # parsed eagerly
    docs = models.DocumentReadPage.model_validate(
        client.get(f"{base}/documents", headers=headers, params={"status": "parsed"}).json())
    assert [d.id for d in docs.items] == [doc.id] and docs.next_cursor is None

    body = models.SampleCreate(document_id=doc.id, messages=[
        {"role": "user", "content": "What is QLoRA?"},
        {"role": "assistant", "content": "LoRA on a 4-bit base model."}])
    made = client.post(f"{base}/samples", headers=headers, json=_json(body))
    assert made.status_code == 201, made.text
    sample = models.SampleRead.model_validate(made.json())
    assert sample.status == models.SampleStatus.pending and sample.document_id == doc.id
    listed = client.get(f"{base}/samples", headers=headers,
                        params={"status": [models.SampleStatus.pending.value], "limit": 10})
    page = models.SampleReadPage.model_validate(listed.json())
    assert [s.id for s in page.items] == [sample.id] and page.next_cursor is None

    missing = client.get(f"{base}/samples/999999", headers=headers)
    error = models.ErrorResponse.model_validate(missing.json())
    assert missing.status_code == 404 and error.error.code == "sample_not_found"
