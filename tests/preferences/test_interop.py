"""The exports in the tools that train on them: LLaMA-Factory 0.9.5's own pipeline with its
pairwise (``stage: dpo`` → ``rm`` data) processing aligns and tokenises every record, and TRL's
DPOTrainer trains a step on the TRL file with a tiny model."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.preferences import export as preferences_export
from service.preferences import review as preferences_review
from service.preferences import service as preferences_service
from service.preferences import versions as preferences_versions

pytestmark = [pytest.mark.ml]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def version(db, team):
    from service.models import Project

    project = db.get(Project, team.project_id)
    for i in range(10):
        prompt = [{"role": "user", "content": f"Question {i}: what is a LoRA adapter?"}]
        if i % 2:
            prompt = [{"role": "system", "content": "Réponds en français."},
                      {"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Salut !"},
                      {"role": "user", "content": f"Question {i} : c'est quoi QLoRA ?"}]
        item = preferences_service.create_item(db, project_id=team.project_id, prompt=prompt, candidates=[
            {"content": f"A low-rank update of the weights ({i}).", "provenance": {"model": "a"}},
            {"content": "No idea.", "provenance": {"model": "b"}}])
        cands = preferences_service.candidates_of(db, item.id)
        outcome = "both_bad" if i == 9 else "preferred"
        preferences_review.decide(db, project=project, item=item, annotator_id=team.ann1.user_id,
                                  outcome=outcome, chosen_id=cands[0].id, rejected_id=cands[1].id)
    db.commit()
    v = preferences_versions.create_version(db, project_id=team.project_id, name="lora qa",
                                            split={"train": 0.7, "validation": 0.3, "test": 0.0},
                                            seed=1, include_both_bad=True, actor_id=None)
    db.commit()  # built eagerly after the commit
    db.refresh(v)
    assert v.status == "ready" and v.counts["pairs"] == 9
    return v


@pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None,
                    reason="llamafactory is not installed")
@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca"])
def test_llamafactory_aligns_every_pair(db, version, fmt, tmp_path):
    from workers.training.models import make_tiny_model

    exp = preferences_export.write_export(db, version, fmt)
    folder = preferences_export.export_dir(version.id, fmt)
    tokenizer_dir = make_tiny_model(tmp_path / "tiny")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.llamafactory_check", str(folder), str(tokenizer_dir),
         str(tmp_path / "out"), "rm"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {f"lora_qa_p{version.number}_{meta['split']}": meta["records"]
                for meta in exp["files"].values() if "split" in meta}
    assert set(result["datasets"]) == set(expected) and sum(expected.values()) == 9
    for name, counts in result["datasets"].items():
        n = expected[name]
        assert counts == {"aligned": n, "valid": n, "tokenized": n}, (name, counts, proc.stderr[-2000:])
    first = result["first"]
    assert [r["role"] for r in first["_response"]] == ["assistant", "assistant"]
    assert "Dropped invalid example" not in proc.stderr and "Invalid role tag" not in proc.stderr


def test_trl_dpo_trainer_reads_the_trl_file(db, version, tmp_path):
    pytest.importorskip("trl")
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from workers.training.models import make_tiny_model

    exp = preferences_export.write_export(db, version, "trl")
    path = preferences_export.export_dir(version.id, "trl") / "train.jsonl"
    data = load_dataset("json", data_files=str(path), split="train")
    assert len(data) == exp["files"]["train.jsonl"]["records"]
    model_dir = make_tiny_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=2,
                     bf16=False, gradient_checkpointing=False, report_to=[], logging_steps=1,
                     max_length=128, use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    assert len(trainer.train_dataset) == len(data)  # nothing dropped by its tokenisation
    trainer.train()
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    assert logged, trainer.state.log_history
