"""Other tools read what annotune writes: Hugging Face `datasets` and TRL's SFTTrainer train on the
OpenAI-messages export as is."""
from __future__ import annotations

import pytest

from tests.datasets.test_export import export, project, version  # noqa: F401  (fixtures)

pytest.importorskip("torch")
trl = pytest.importorskip("trl")
pytestmark = pytest.mark.ml


def test_trl_sft_trainer_trains_on_the_openai_export(db, version, tmp_path):  # noqa: F811
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from service.datasets import export as datasets_export
    from workers.training.models import load_tokenizer, make_tiny_model

    exp = export(db, version, "openai")
    folder = datasets_export.export_dir(version.id, "openai")
    ds = load_dataset("json", data_files=str(folder / "train.jsonl"), split="train")
    assert set(ds.column_names) == {"messages"} and len(ds) == version.counts["train"]

    model_dir = make_tiny_model(tmp_path / "tiny")
    tokenizer = load_tokenizer(str(model_dir))
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                     bf16=False, fp16=False, gradient_checkpointing=False, report_to=[],
                     logging_steps=1, save_strategy="no", max_length=128, use_cpu=True)
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=ds, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss > 0
    assert exp.files  # the export that TRL read is the recorded one
