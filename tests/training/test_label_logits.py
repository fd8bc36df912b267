"""Logits only where a label is: the same loss and gradients as the model's own forward, the
check that refuses architectures where it is not, and a training run with the same curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.training.test_packing import Events, _cfg
from workers.training import label_logits as label_logits_mod
from workers.training.data import PaddingCollator, build_dataset
from workers.training.label_logits import label_logits_exact, label_loss
from workers.training.models import build_tiny_tokenizer
from workers.training.packing import NUM_TOKENS_KEY, PackedCollator
from workers.training.train import train

pytestmark = [pytest.mark.ml, pytest.mark.nodb]


def _lora(model_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.config.use_cache = False
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                      task_type="CAUSAL_LM", init_lora_weights=False)  # non-zero B: real gradients
    return get_peft_model(model, lora)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packed", [False, True])
def test_loss_and_gradients_equal_the_models_own(tiny_model, spread_file, packed):
    tokenizer = build_tiny_tokenizer()
    data = build_dataset(tokenizer, spread_file, max_seq_length=128)
    features = [data[i] for i in range(8)]
    collate = PackedCollator(tokenizer.pad_token_id, 128) if packed else PaddingCollator(
        tokenizer.pad_token_id)
    batch = collate(features)
    batch.pop(NUM_TOKENS_KEY, None)
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"].numel()  # prompts carry no label: positions skipped

    model = _lora(tiny_model)
    model.train()
    for num_items in (None, torch.tensor(labelled + 5)):
        model.zero_grad()
        theirs = model(**batch, num_items_in_batch=num_items).loss
        theirs.backward()
        want = _grads(model)
        model.zero_grad()
        ours = label_loss(model, batch, num_items)
        ours.backward()
        got = _grads(model)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        assert want.keys() == got.keys() and len(want) == 8  # 2 layers x q, v x A, B
        for name in want:
            assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


def test_the_check_passes_for_llama_and_refuses_a_soft_capped_head(tiny_model):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    assert label_logits_exact(_lora(tiny_model)) is None
    torch.manual_seed(0)
    capped = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, final_logit_softcapping=0.5,
        initializer_range=0.5))
    reason = label_logits_exact(capped)
    assert reason is not None and "differs" in reason


def test_a_run_has_the_curve_of_the_models_own_forward(tiny_model, spread_file, tmp_path,
                                                       monkeypatch):
    hooks = Events()
    fast = train(_cfg(tiny_model, max_steps=6), train_file=spread_file,
                 output_dir=tmp_path / "fast", callbacks=hooks)
    event = next(e for e in hooks.events if e["kind"] == "label_logits")
    assert event == {"kind": "label_logits", "used": True, "reason": None}

    monkeypatch.setattr(label_logits_mod, "label_logits_exact", lambda model: "test: off")
    hooks = Events()
    plain = train(_cfg(tiny_model, max_steps=6), train_file=spread_file,
                  output_dir=tmp_path / "plain", callbacks=hooks)
    event = next(e for e in hooks.events if e["kind"] == "label_logits")
    assert event["used"] is False and event["reason"] == "test: off"

    def losses(result):
        return [p["loss"] for p in json.loads(Path(result.loss_curve_path).read_text())["train"]]

    a, b = losses(fast), losses(plain)
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    assert a[-1] < a[0]
    assert fast.tokens_processed == plain.tokens_processed
