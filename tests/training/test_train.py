"""Training on a tiny random Llama with a tiny offline tokenizer: LoRA, QLoRA, hooks, cancel, resume.

Everything runs on CPU in well under two minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from service.training.config import TrainingConfig
from workers.training.artifacts import merge_adapter, vllm_serve_commands
from workers.training.data import (
    IGNORE_INDEX,
    PaddingCollator,
    build_dataset,
    load_messages_jsonl,
    tokenize_conversation,
)
from workers.training.models import build_tiny_tokenizer
from workers.training.train import TrainingHooks, resolve_optimizer, train

pytestmark = [pytest.mark.ml, pytest.mark.nodb]

ANSWER = "The quick brown fox jumps over the lazy dog."


class RecordingHooks(TrainingHooks):
    def __init__(self, cancel_after_step: int | None = None):
        self.calls: list[tuple] = []
        self.cancel_after_step = cancel_after_step
        self.last_step = 0

    def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory):
        self.last_step = step
        self.calls.append(("log", step, loss, learning_rate, grad_norm, tokens_per_s, memory))

    def on_event(self, level, message, data):
        assert level in ("info", "warning")
        self.calls.append(("event", data["kind"], message, data))

    def should_cancel(self):
        return self.cancel_after_step is not None and self.last_step >= self.cancel_after_step

    def on_checkpoint(self, step, path, metrics):
        self.calls.append(("checkpoint", step, path, metrics))

    def kinds(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "event"]

    def logs(self) -> list[tuple]:
        return [c for c in self.calls if c[0] == "log"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {
            "id": i,
            "messages": [
                {"role": "system", "content": "Answer with the pangram."},
                {"role": "user", "content": f"Give me sentence number {i % 4}."},
                {"role": "assistant", "content": ANSWER},
            ],
        }
        for i in range(16)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(model: Path, **overrides) -> TrainingConfig:
    base = {
        "base_model": str(model),
        "method": "lora",
        "max_steps": 12,
        "learning_rate": 2e-2,
        "batch_size": 4,
        "gradient_accumulation": 1,
        "max_seq_length": 64,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "logging_steps": 1,
        "save_steps": 100,
        "seed": 1,
    }
    base.update(overrides)
    return TrainingConfig(**base)


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
QWEN3_STYLE = (
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if message.role == 'user' and ns.last_query_index == messages|length - 1 %}"
    "{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role != 'assistant' %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- elif loop.index0 > ns.last_query_index and loop.last %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message.content + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\n' + message.content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there, what is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And 2+2?"},
    {"role": "assistant", "content": "It is 4, thank you!"},
]


def _learned_text(tokenizer, example) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    )


@pytest.mark.parametrize("template", ["chatml", "qwen3-style"])
def test_only_assistant_tokens_have_labels(template):
    tokenizer = build_tiny_tokenizer()
    expected = "Paris.<|im_end|>\nIt is 4, thank you!<|im_end|>\n"
    if template == "qwen3-style":
        tokenizer.chat_template = QWEN3_STYLE  # history renders differently from the last turn
        expected = "Paris.<|im_end|>\n<think>\n\n</think>\n\nIt is 4, thank you!<|im_end|>\n"
    example = tokenize_conversation(tokenizer, CONVERSATION, max_seq_length=512)
    assert example is not None
    assert _learned_text(tokenizer, example) == expected
    # every label is either -100 or the token itself (the model shifts), and prompts are masked
    for token, label in zip(example["input_ids"], example["labels"]):
        assert label in (IGNORE_INDEX, token)
    full = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert tokenizer.decode(example["input_ids"]) == full
    masked = tokenizer.decode(
        [t for t, lab in zip(example["input_ids"], example["labels"]) if lab == IGNORE_INDEX]
    )
    for message in CONVERSATION:
        if message["role"] != "assistant":
            assert message["content"] in masked


def test_truncation_and_dropping(tmp_path):
    tokenizer = build_tiny_tokenizer()
    long_prompt = [
        {"role": "user", "content": "word " * 200},
        {"role": "assistant", "content": "ok"},
    ]
    assert tokenize_conversation(tokenizer, long_prompt, max_seq_length=32) is None
    full = tokenize_conversation(tokenizer, CONVERSATION, max_seq_length=4096)
    first = next(i for i, label in enumerate(full["labels"]) if label != IGNORE_INDEX)
    example = tokenize_conversation(tokenizer, CONVERSATION, max_seq_length=first + 2)
    assert example is not None and example["truncated"] and not full["truncated"]
    assert example["input_ids"] == full["input_ids"][: first + 2]
    assert example["labels"] == full["labels"][: first + 2]
    assert tokenize_conversation(tokenizer, CONVERSATION, max_seq_length=first) is None

    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"messages": long_prompt})
        + "\n\n"
        + json.dumps({"messages": CONVERSATION})
        + "\n"
    )
    assert first + 2 < 200
    data = build_dataset(tokenizer, path, max_seq_length=first + 2)
    assert (
        len(data) == 1 and data.stats.dropped_no_assistant_tokens == 1 and data.stats.truncated == 1
    )
    assert len(data.stats.sha256) == 64


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"messages": CONVERSATION})
        + "\n"
        + json.dumps({"messages": [{"role": "bot", "content": "x"}]})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: messages\[0\]\.role"):
        load_messages_jsonl(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    with pytest.raises(ValueError, match="no assistant message"):
        load_messages_jsonl(path)


def test_collator_pads_right_with_ignored_labels():
    batch = PaddingCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert PaddingCollator(0, pad_to_multiple_of=8)([{"input_ids": [1], "labels": [1]}])[
        "input_ids"
    ].shape == (1, 8)


def test_cpu_optimizer_fallback_is_explicit():
    assert resolve_optimizer("paged_adamw_8bit", "cpu")[0] == "adamw_torch"
    assert resolve_optimizer("paged_adamw_8bit", "cpu")[1]
    assert resolve_optimizer("adamw_torch", "cpu") == ("adamw_torch", [])
    assert resolve_optimizer("paged_adamw_8bit", "cuda") == ("paged_adamw_8bit", [])


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def _logits(model_dir: Path, adapter: Path | None, tokenizer_dir: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Give me sentence number 1."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tokenizer(ids, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**enc).logits


def test_lora_run_learns_reports_and_exports(tiny_model, data_file, tmp_path):
    hooks = RecordingHooks()
    out = tmp_path / "run"
    result = train(
        _config(tiny_model, save_steps=6, eval_steps=6),
        train_file=data_file,
        eval_file=data_file,
        output_dir=out,
        callbacks=hooks,
        dataset_manifest={"dataset_version_id": 7, "sha256": "abc"},
        adapter_name="pangram",
    )
    assert result.status == "completed" and result.global_step == 12
    assert result.device == "cpu"
    assert result.tokens_processed > 0 and result.tokens_per_s and result.tokens_per_s > 0

    # loss falls on a repetitive dataset
    losses = [c[2] for c in hooks.logs()]
    assert [c[1] for c in hooks.logs()] == list(range(1, 13))
    assert losses[-1] < losses[0] - 1.0, losses
    assert result.eval_loss is not None and result.eval_loss < losses[0]

    # hooks: events in order, logs between model_loaded and finished, checkpoints after their step's log
    kinds = hooks.kinds()
    assert kinds[0] == "started" and kinds[-1] == "finished"
    order = [
        kinds.index(k)
        for k in (
            "started",
            "model_resolved",
            "data_loaded",
            "model_loaded",
            "train_begin",
            "finished",
        )
    ]
    assert order == sorted(order)
    assert "fallback" in kinds and any("adamw_torch" in f for f in result.fallbacks)
    flat = [(c[0], c[1]) for c in hooks.calls]
    assert next(c[3] for c in hooks.calls if c[1] == "train_begin")["max_steps"] == 12
    assert (
        flat.index(("event", "model_loaded"))
        < flat.index(("log", 1))
        < flat.index(("event", "finished"))
    )
    checkpoints = [c for c in hooks.calls if c[0] == "checkpoint"]
    assert [c[1] for c in checkpoints] == [6, 12]
    assert flat.index(("log", 6)) < flat.index(("checkpoint", 6))
    assert Path(checkpoints[0][2]).is_dir() and checkpoints[0][3]["eval_loss"] is not None
    first_log = hooks.logs()[0]
    assert (
        first_log[3] == pytest.approx(2e-2)
        and first_log[4] is not None
        and first_log[6]["rss_mb"] > 0
    )
    assert ("event", "evaluated") in flat

    # artifacts
    adapter = Path(result.adapter_dir)
    assert (adapter / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model)
    assert adapter_config["r"] == 8
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["config"]["lora_r"] == 8
    assert saved["dataset_sha256"]["train"] == result.data["train"]["sha256"]
    assert saved["dataset"]["manifest"] == {"dataset_version_id": 7, "sha256": "abc"}
    assert saved["result"]["status"] == "completed"
    curve = json.loads((out / "loss_curve.json").read_text())
    assert len(curve["train"]) == 12 and [p["step"] for p in curve["eval"]] == [6, 12]
    assert result.serve_commands["lora"] == (
        f"vllm serve {tiny_model} --enable-lora --lora-modules pangram={adapter}"
    )
    assert result.serve_commands["merged"].endswith("--served-model-name pangram")

    # the adapter loads back with peft and changes the model's output
    base = _logits(tiny_model, None, tiny_model)
    tuned = _logits(tiny_model, adapter, adapter)
    assert (base - tuned).abs().max().item() > 1e-2

    # merged into the fp32 base: same logits as base + adapter
    merged = merge_adapter(str(tiny_model), adapter, tmp_path / "merged", dtype="float32")
    assert not (merged / "adapter_config.json").exists()
    torch.testing.assert_close(_logits(merged, None, merged), tuned, atol=1e-4, rtol=1e-4)


def test_qlora_run_trains_on_4bit_base(tiny_model, data_file, tmp_path):
    hooks = RecordingHooks()
    result = train(
        _config(tiny_model, method="qlora", max_steps=10),
        train_file=data_file,
        output_dir=tmp_path,
        callbacks=hooks,
    )
    assert result.status == "completed" and result.global_step == 10
    loaded = next(c[3] for c in hooks.calls if c[0] == "event" and c[1] == "model_loaded")
    assert loaded["quantized"] is True and loaded["compute_dtype"] == "float32"
    assert loaded["gradient_checkpointing"] is False  # CPU default
    assert any("float32 compute" in f for f in result.fallbacks)
    losses = [c[2] for c in hooks.logs()]
    assert losses[-1] < losses[0] - 1.0, losses
    base = _logits(tiny_model, None, tiny_model)
    tuned = _logits(tiny_model, Path(result.adapter_dir), tiny_model)
    assert (base - tuned).abs().max().item() > 1e-2


def test_gradient_checkpointing_path_runs_when_asked(tiny_model, data_file, tmp_path):
    # The CUDA default (k-bit prep + checkpointing), exercised on CPU where it is opt-in.
    hooks = RecordingHooks()
    result = train(
        _config(tiny_model, method="qlora", max_steps=3, gradient_checkpointing=True),
        train_file=data_file,
        output_dir=tmp_path,
        callbacks=hooks,
    )
    assert result.status == "completed" and result.global_step == 3
    loaded = next(c[3] for c in hooks.calls if c[0] == "event" and c[1] == "model_loaded")
    assert loaded["gradient_checkpointing"] is True
    assert any("checkpointing on CPU" in c[2] for c in hooks.calls if c[0] == "event")


def test_cancel_then_resume_from_checkpoint(tiny_model, data_file, tmp_path):
    config = _config(tiny_model, max_steps=8, save_steps=2)
    hooks = RecordingHooks(cancel_after_step=3)
    first = train(config, train_file=data_file, output_dir=tmp_path, callbacks=hooks)
    assert first.status == "cancelled"
    assert 3 <= first.global_step <= 5  # stops within 2 steps of the request
    assert first.adapter_dir is None
    assert "cancel_requested" in hooks.kinds() and hooks.calls[-1][3]["status"] == "cancelled"
    last_checkpoint = max(c[1] for c in hooks.calls if c[0] == "checkpoint")
    assert last_checkpoint in (2, 4)

    hooks = RecordingHooks()
    second = train(config, train_file=data_file, output_dir=tmp_path, callbacks=hooks)
    assert second.status == "completed" and second.global_step == 8
    assert second.resumed_from is not None and second.resumed_from.endswith(
        f"checkpoint-{last_checkpoint}"
    )
    resumed = next(c[3] for c in hooks.calls if c[0] == "event" and c[1] == "resumed")
    assert resumed["step"] == last_checkpoint
    begin = next(c[3] for c in hooks.calls if c[0] == "event" and c[1] == "train_begin")
    assert begin["start_step"] == last_checkpoint and begin["max_steps"] == 8
    assert next(c[1] for c in hooks.logs()) == last_checkpoint + 1  # continued, not restarted
    curve = json.loads((tmp_path / "loss_curve.json").read_text())
    assert [p["step"] for p in curve["train"]] == list(
        range(1, 9)
    )  # old points kept up to the checkpoint
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_merge_refuses_quantized_base(tmp_path, tiny_model):
    quantized = tmp_path / "q"
    quantized.mkdir()
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="quantized"):
        merge_adapter(str(quantized), tmp_path / "adapter", tmp_path / "out", dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype"):
        merge_adapter(str(tiny_model), tmp_path / "adapter", tmp_path / "out", dtype="int4")


def test_vllm_commands_quote_and_raise_rank():
    cmds = vllm_serve_commands(
        "/m/base dir", "/a/adapter", name="my-model", lora_r=64, merged_path="/m/merged"
    )
    assert (
        cmds["lora"]
        == "vllm serve '/m/base dir' --enable-lora --lora-modules my-model=/a/adapter --max-lora-rank 64"
    )
    assert cmds["merged"] == "vllm serve /m/merged --served-model-name my-model"


def test_resolve_base_model(tmp_path, tiny_model):
    from workers.training.models import resolve_base_model

    local = resolve_base_model(str(tiny_model), cache_dir=tmp_path)
    assert local.source == "local" and local.path == str(tiny_model.resolve())
    assert resolve_base_model("Qwen/Qwen2.5-0.5B-Instruct", cache_dir=tmp_path).source == "hub"
    with pytest.raises(FileNotFoundError):
        resolve_base_model(str(tmp_path / "missing"), cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_base_model(str(tmp_path / "missing.gguf"), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_base_model(str(tmp_path / "empty"), cache_dir=tmp_path)


def test_base_model_without_chat_template_falls_back_to_chatml(tiny_model, data_file, tmp_path):
    import shutil

    plain = tmp_path / "plain-base"
    shutil.copytree(tiny_model, plain)
    (plain / "chat_template.jinja").unlink()
    hooks = RecordingHooks()
    result = train(
        _config(plain, max_steps=2),
        train_file=data_file,
        output_dir=tmp_path / "run",
        callbacks=hooks,
    )
    assert result.status == "completed"
    assert any("ChatML" in f for f in result.fallbacks)
    # the template used for training is saved with the adapter, for inference
    assert (Path(result.adapter_dir) / "chat_template.jinja").is_file()


def test_resume_skips_a_checkpoint_torn_by_a_killed_worker(tiny_model, data_file, tmp_path):
    """A worker killed while saving leaves checkpoint-<n> without trainer_state.json (written
    last); resuming takes the newest complete checkpoint instead of failing on the torn one."""
    from workers.training.train import CHECKPOINTS_DIR, last_complete_checkpoint

    config = _config(tiny_model, max_steps=6, save_steps=2)
    first = train(config, train_file=data_file, output_dir=tmp_path,
                  callbacks=RecordingHooks(cancel_after_step=3))
    assert first.status == "cancelled"
    folder = tmp_path / CHECKPOINTS_DIR
    complete = last_complete_checkpoint(folder)
    assert complete is not None
    torn = folder / "checkpoint-5"
    torn.mkdir()
    (torn / "adapter_config.json").write_text("{}")  # the save got this far
    assert last_complete_checkpoint(folder) == complete

    second = train(config, train_file=data_file, output_dir=tmp_path, callbacks=RecordingHooks())
    assert second.status == "completed" and second.global_step == 6
    assert second.resumed_from == complete
