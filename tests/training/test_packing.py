"""Padding-free packing: exact per-sample losses, labels kept, the leak check, and a training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from service.training.config import TrainingConfig, TrainingConfigError
from workers.training import packing as packing_mod
from workers.training.data import IGNORE_INDEX, PaddingCollator, build_dataset
from workers.training.models import build_tiny_tokenizer
from workers.training.packing import (
    NUM_TOKENS_KEY,
    PackedCollator,
    PackingPlan,
    pack_rows,
    packed_collator,
    packing_leak,
    resolve_packing,
)
from workers.training.train import train

pytestmark = [pytest.mark.ml, pytest.mark.nodb]

def _load(model_dir: Path, attn: str):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    if attn == "gpt2":  # absolute position embeddings: restarting positions matter there
        torch.manual_seed(0)
        config = GPT2Config(
            vocab_size=len(build_tiny_tokenizer()),
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=512,
            initializer_range=0.1,
        )
        model = GPT2LMHeadModel(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn)
    model.config.use_cache = False  # as train() loads it
    model.eval()
    return model


def _per_sample_losses(logits, labels) -> list[float]:
    """Mean next-token cross entropy of each row's labelled tokens."""
    out = []
    for row_logits, row_labels in zip(logits, labels):
        loss = torch.nn.functional.cross_entropy(
            row_logits[:-1].float(), row_labels[1:], ignore_index=IGNORE_INDEX
        )
        out.append(loss.item())
    return out


@pytest.mark.parametrize("row_length", [None, 160, 100])
@pytest.mark.parametrize("attn", ["sdpa", "eager", "gpt2"])
def test_packed_batch_gives_each_sample_its_padded_loss(tiny_model, spread_file, attn, row_length):
    tokenizer = build_tiny_tokenizer()
    data = build_dataset(tokenizer, spread_file, max_seq_length=256)
    features = [data[i] for i in range(8)]
    lengths = [len(f["input_ids"]) for f in features]
    assert max(lengths) > 2 * min(lengths)  # a real spread: the padded batch is mostly padding
    model = _load(tiny_model, attn)
    assert packing_leak(model, batched=row_length is not None) is None

    padded = PaddingCollator(tokenizer.pad_token_id)(features)
    packed = PackedCollator(tokenizer.pad_token_id, row_length)(features)
    assert "attention_mask" not in packed  # its absence is what turns on the block-diagonal mask
    assert packed.pop(NUM_TOKENS_KEY) == sum(lengths)
    rows = pack_rows(lengths, row_length)
    if row_length is None:
        assert packed["input_ids"].shape == (1, sum(lengths))
    else:  # several rows, each bounded, and fewer token slots than the padded batch
        assert len(rows) > 1 and packed["input_ids"].shape[1] <= row_length
        assert packed["input_ids"].numel() < padded["input_ids"].numel()
    with torch.no_grad():
        out_padded = model(**padded)
        out_packed = model(**packed)

    want = _per_sample_losses(out_padded.logits, padded["labels"])
    got = [0.0] * len(features)
    for r, row in enumerate(rows):  # cut each packed row back into its samples
        start = 0
        for i in row:
            k = lengths[i]
            got[i] = _per_sample_losses(
                out_packed.logits[r : r + 1, start : start + k],
                packed["labels"][r : r + 1, start : start + k],
            )[0]
            start += k
        assert (packed["labels"][r, start:] == IGNORE_INDEX).all()  # the filler is never learned
    assert got == pytest.approx(want, abs=1e-4)
    # the batch loss the Trainer optimises (token-weighted mean) is the same too
    assert out_packed.loss.item() == pytest.approx(out_padded.loss.item(), abs=1e-4)


def test_pack_rows_bounds_rows_and_minimises_slots():
    lengths = [44, 41, 64, 58, 59, 28, 71, 72]
    for bound in (72, 100, 150, 256, 1000):
        rows = pack_rows(lengths, bound)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        widths = [sum(lengths[i] for i in row) for row in rows]
        assert max(widths) <= bound
        # no other capacity in [longest, bound] packs first-fit-decreasing into fewer slots
        assert len(rows) * max(widths) <= len(lengths) * max(lengths)
    assert pack_rows(lengths, None) == [list(range(8))]
    assert pack_rows([5, 5, 5, 5], 10) == [[0], [1], [2], [3]]  # 20 slots either way: narrower rows
    assert pack_rows([9, 2, 2], 10) in ([[0], [1, 2]], [[0, 1], [2]])  # 2 x 9 either way
    assert pack_rows([3, 3, 3], 1000) == [[0], [1], [2]]  # 9 slots either way: narrower rows
    assert pack_rows([7], 4) == [
        [0]
    ]  # a sample longer than the bound (never made by build_dataset)
    assert pack_rows([], 10) == []


def test_packed_rows_layout():
    features = [
        {"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
        {"input_ids": [4, 5], "labels": [4, 5]},
        {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]},
    ]
    batch = PackedCollator(pad_token_id=0, max_length=5)(features)
    assert batch[NUM_TOKENS_KEY] == 9
    # capacity 4 would need 3 rows x 4; capacity 5 packs [4 tokens + filler] and [3 + 2]
    assert batch["input_ids"].tolist() == [[6, 7, 8, 9, 0], [1, 2, 3, 4, 5]]
    # each sample's first label dropped (the causal shift drops it in a padded batch too)
    assert batch["labels"].tolist() == [[-100, -100, 8, 9, -100], [-100, 2, 3, -100, 5]]
    # positions restart per sample; the filler is a sequence of its own, after the sample
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert "attention_mask" not in batch


def test_packed_labels_are_the_assistant_labels(spread_file):
    tokenizer = build_tiny_tokenizer()
    data = build_dataset(tokenizer, spread_file, max_seq_length=256)
    features = [data[i] for i in range(6)]
    packed = packed_collator()(features)
    assert packed[NUM_TOKENS_KEY] == sum(len(f["input_ids"]) for f in features)
    ids, labels, positions = (
        packed[k][0].tolist() for k in ("input_ids", "labels", "position_ids")
    )
    assert ids == [t for f in features for t in f["input_ids"]]
    assert positions == [p for f in features for p in range(len(f["input_ids"]))]
    # each sample's first token is a prompt token (never learned), so the separator changes nothing
    assert labels == [label for f in features for label in f["labels"]]
    learned = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert learned == [
        t for f in features for t, lab in zip(f["input_ids"], f["labels"]) if lab != IGNORE_INDEX
    ]
    assert 0 < len(learned) < len(ids)
    assert tokenizer.decode(learned).count("<|im_end|>") == sum(
        2 if i % 3 == 0 else 1 for i in range(6)
    )  # every assistant turn, end marker included, and nothing else


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_leak_check_passes_and_catches_cross_attention(tiny_model, attn, monkeypatch):
    model = _load(tiny_model, attn)
    assert packing_leak(model) is None
    plan = resolve_packing("auto", model, batch_size=4)
    assert plan.packed and not plan.bucketed and plan.mode == "packed" and attn in plan.reason
    assert plan.row_length is None and "one row per batch" in plan.reason
    plan = resolve_packing("auto", model, batch_size=4, max_length=64)
    assert plan.packed and plan.row_length == 64 and "rows of up to 64 tokens" in plan.reason

    # transformers no longer seeing the restarting positions = each sample attends to the previous
    monkeypatch.setattr(
        "transformers.masking_utils.find_packed_sequence_indices", lambda position_ids: None
    )
    assert "change with the sequence before it" in packing_leak(model)
    assert "change with the sequence before it" in packing_leak(model, batched=False)
    plan = resolve_packing("auto", model, batch_size=4, max_length=64)
    assert plan.mode == "bucketed" and "not exact" in plan.reason
    with pytest.raises(ValueError, match="packing='on'"):
        resolve_packing("on", model, batch_size=4)
    assert resolve_packing("off", model, batch_size=4).mode == "bucketed"
    monkeypatch.undo()

    # a KV cache (use_cache on) makes transformers ignore the packing: caught as well
    model.config.use_cache = True
    assert "change with the sequence before it" in packing_leak(model)


def test_config_field():
    assert TrainingConfig().packing == "auto"
    assert TrainingConfig(packing=" off ").packing == "off"
    with pytest.raises(TrainingConfigError, match="packing: must be one of auto, on, off"):
        TrainingConfig(packing="yes")


def _cfg(model: Path, **overrides) -> TrainingConfig:
    # fmt: off
    base = {
        "base_model": str(model), "method": "lora", "max_steps": 8, "learning_rate": 2e-2, "batch_size": 6,
        "gradient_accumulation": 1, "max_seq_length": 256, "warmup_ratio": 0.0, "lr_scheduler": "constant",
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "logging_steps": 1, "save_steps": 100, "seed": 3,
    }
    # fmt: on
    return TrainingConfig(**{**base, **overrides})


class Events:
    def __init__(self):
        self.events = []

    def on_log(self, *a, **k):
        pass

    def on_event(self, level, message, data):
        self.events.append(data)

    def should_cancel(self):
        return False

    def on_checkpoint(self, *a):
        pass


def test_packed_run_matches_the_padded_run(tiny_model, spread_file, tmp_path, monkeypatch):
    hooks = Events()
    packed = train(
        _cfg(tiny_model), train_file=spread_file, output_dir=tmp_path / "packed", callbacks=hooks
    )
    assert packed.packing["mode"] == "packed"
    event = next(e for e in hooks.events if e["kind"] == "packing")
    assert event["mode"] == "packed" and event["requested"] == "auto" and event["row_length"] == 256
    assert "rows of up to 256 tokens" in event["reason"]
    saved = json.loads((tmp_path / "packed" / "training_config.json").read_text())
    assert saved["config"]["packing"] == "auto" and saved["result"]["packing"]["mode"] == "packed"

    # the same run with plain padded batches in the same order
    monkeypatch.setattr(
        packing_mod,
        "resolve_packing",
        lambda requested, model, **kwargs: PackingPlan(requested, False, False, "test: padded"),
    )
    padded = train(_cfg(tiny_model), train_file=spread_file, output_dir=tmp_path / "padded")
    assert padded.packing["mode"] == "padded"
    assert packed.tokens_processed == padded.tokens_processed  # non-padding tokens, counted alike

    def losses(result):
        points = json.loads(Path(result.loss_curve_path).read_text())["train"]
        return [p["loss"] for p in points]

    a, b = losses(packed), losses(padded)
    assert len(a) == len(b) == 8
    assert a == pytest.approx(b, rel=1e-3, abs=1e-3)
    assert a[-1] < a[0]  # and it learns

    monkeypatch.undo()
    bucketed = train(
        _cfg(tiny_model, packing="off"), train_file=spread_file, output_dir=tmp_path / "bucketed"
    )
    assert bucketed.packing["mode"] == "bucketed"
    c = losses(bucketed)
    assert c[-1] < c[0] and abs(c[-1] - a[-1]) < 0.5 * a[0]  # other batches, same learning
