"""One DPO / ORPO / KTO run with TRL's trainers and a LoRA (or QLoRA) adapter.

``train_preference(config, train_file=..., output_dir=..., callbacks=hooks)`` mirrors
``workers.training.train.train``: a :class:`PreferenceConfig`, the TRL (pairs) or KTO (unpaired)
JSONL export of a preference version, a folder, and the same :class:`TrainingHooks` (so the
runner's events, progress, cancel within a step and checkpoint resume are the SFT job's). Each
logged step also reports TRL's reward metrics (``rewards/margins``, ``rewards/accuracies``,
``rewards/chosen``, ``rewards/rejected``) through ``hooks.on_log(..., rewards=...)`` and in
``loss_curve.json``.

The start model is the base, or with ``init_adapter`` an SFT adapter merged into its base; DPO's
reference is that start model (the policy with its new adapter disabled), so a run from an SFT
adapter is regularised towards the SFT model, not the bare base. Output layout as for SFT:
``checkpoints/``, ``adapter/``, ``training_config.json``, ``loss_curve.json``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from service.core.db import get_sessionmaker
from service.models import PreferenceVersion, TrainingJob
from service.preferences import export as preferences_export
from service.training.preference import PreferenceConfig
from workers.training.runtime import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    _checkpoint_step,
    _checkpointing_kwargs,
    _warmup_kwargs,
    last_complete_checkpoint,
    memory_snapshot,
    resolve_device,
    resolve_optimizer,
)
from workers.training.train import TrainingHooks, TrainResult, _make_bridge

REWARD_KEYS = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "kl")


def ensure_export(job: TrainingJob) -> Path:
    """The version's TRL export (KTO's for ``kto``), written here unless the folder holds this
    very version's (same bytes always). The folder is named by version id only, so a manifest
    of another version with that id (a database recreated under a kept data folder) is
    rewritten, never trained on."""
    fmt = "kto" if job.method == "kto" else "trl"
    folder = preferences_export.export_dir(job.preference_version_id, fmt)
    manifest = folder / "manifest.json"
    with get_sessionmaker()() as db:
        version = db.get_one(PreferenceVersion, job.preference_version_id)
        want = {"id": version.id,
                "built_at": version.built_at.isoformat() if version.built_at else None}
        have = json.loads(manifest.read_text()).get("version") or {} if manifest.is_file() else {}
        if {k: have.get(k) for k in want} != want:
            preferences_export.write_export(db, version, fmt)
    return folder


def sft_adapter(job: TrainingJob) -> str | None:
    sft_id = (job.hyperparameters or {}).get("sft_job_id")
    if not sft_id:
        return None
    with get_sessionmaker()() as db:
        sft = db.get(TrainingJob, sft_id)
        path = (sft.artifacts or {}).get("adapter_dir") if sft is not None else None
    if not path or not Path(path).is_dir():
        raise RuntimeError(f"the adapter of training job {sft_id} is gone")
    return str(path)


class _RewardHooks(TrainingHooks):
    """Forwards to the runner's hooks, adding the reward metrics of the step being logged."""

    def __init__(self, inner: TrainingHooks, curve: list[dict[str, Any]]):
        self.inner, self.curve, self.latest = inner, curve, {}

    def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory) -> None:
        rewards = dict(self.latest)
        if rewards and self.curve and self.curve[-1].get("step") == step:
            self.curve[-1].update(rewards)
        self.inner.on_log(step=step, epoch=epoch, loss=loss, learning_rate=learning_rate,
                          grad_norm=grad_norm, tokens_per_s=tokens_per_s, memory=memory,
                          rewards=rewards or None)

    def on_event(self, level, message, data) -> None:
        self.inner.on_event(level, message, data)

    def should_cancel(self) -> bool:
        return self.inner.should_cancel()

    def on_checkpoint(self, step, path, metrics) -> None:
        self.inner.on_checkpoint(step, path, metrics)


def _trainer_classes(method: str) -> tuple[Any, Any]:
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" notice
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


def train_preference(config: PreferenceConfig, *, train_file: str | os.PathLike,
                     eval_file: str | os.PathLike | None = None, output_dir: str | os.PathLike,
                     callbacks: TrainingHooks | None = None,
                     model_cache_dir: str | os.PathLike | None = None,
                     dataset_manifest: dict[str, Any] | None = None,
                     adapter_name: str | None = None,
                     init_adapter: str | None = None) -> TrainResult:
    t_start = time.perf_counter()
    import torch
    import transformers
    from datasets import load_dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from workers.training import artifacts
    from workers.training.models import CHATML_TEMPLATE, load_tokenizer, resolve_base_model
    from workers.training.quantization import plan_quantization, prepare_kbit_model

    outer = callbacks if callbacks is not None else TrainingHooks()
    curve: list[dict[str, Any]] = []
    hooks = _RewardHooks(outer, curve)
    out = Path(output_dir)
    ckpt_dir = out / CHECKPOINTS_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fallbacks: list[str] = []

    def fallback(message: str) -> None:
        fallbacks.append(message)
        hooks.on_event("warning", message, {"kind": "fallback"})

    device_type = resolve_device(config.device)
    hooks.on_event("info", f"training {config.method} on {device_type}: {config.base_model}"
                   + (f" + SFT adapter {init_adapter}" if init_adapter else ""),
                   {"kind": "started", "device": device_type, "config": config.to_dict()})
    resolved = resolve_base_model(config.base_model, cache_dir=model_cache_dir)
    hooks.on_event("info", f"base model {config.base_model} -> {resolved.path}",
                   {"kind": "model_resolved", **asdict(resolved)})
    plan = plan_quantization("qlora" if config.quantize else "lora", device_type)
    for message in plan.fallbacks:
        fallback(message)
    optim, optim_fallbacks = resolve_optimizer(config.optim, device_type)
    for message in optim_fallbacks:
        fallback(message)
    gradient_checkpointing = (device_type == "cuda" if config.gradient_checkpointing is None
                              else config.gradient_checkpointing)
    transformers.set_seed(config.seed)

    tokenizer = load_tokenizer(resolved.path)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
        fallback("tokenizer has no chat template: using ChatML (saved with the adapter)")
    train_data = load_dataset("json", data_files=str(train_file), split="train")
    if config.max_samples:
        train_data = train_data.select(range(min(config.max_samples, len(train_data))))
    eval_data = (load_dataset("json", data_files=str(eval_file), split="train")
                 if eval_file is not None and Path(eval_file).is_file() else None)
    data_info = {"train": {"records": len(train_data)},
                 "eval": {"records": len(eval_data)} if eval_data is not None else None}
    hooks.on_event("info", f"{len(train_data)} training records"
                   + (f", {len(eval_data)} validation records" if eval_data is not None else ""),
                   {"kind": "data_loaded", **data_info})

    t_load = time.perf_counter()
    load_kwargs: dict[str, Any] = {"dtype": plan.load_dtype}
    if plan.quantization_config is not None:
        load_kwargs["quantization_config"] = plan.quantization_config
        load_kwargs["device_map"] = {"": 0} if device_type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(resolved.path, **load_kwargs)
    if init_adapter:  # start (and reference) = the SFT model
        model = PeftModel.from_pretrained(model, init_adapter).merge_and_unload()
    model.config.use_cache = False
    if plan.quantization_config is not None:
        model = prepare_kbit_model(model, gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM"))
    trainable, total = model.get_nb_trainable_parameters()
    hooks.on_event("info", f"model loaded in {time.perf_counter() - t_load:.1f}s: "
                   f"{trainable:,} trainable of {total:,} parameters",
                   {"kind": "model_loaded", "trainable_parameters": int(trainable),
                    "total_parameters": int(total), "optim": optim,
                    "quantized": plan.quantization_config is not None,
                    "gradient_checkpointing": gradient_checkpointing})

    config_cls, trainer_cls = _trainer_classes(config.method)
    use_bf16 = device_type == "cuda" and str(plan.compute_dtype) == "torch.bfloat16"
    extra: dict[str, Any] = {"beta": config.beta, "max_length": config.max_seq_length}
    if config.method == "dpo":
        extra["loss_type"] = [config.loss_type]
    args = config_cls(
        output_dir=str(ckpt_dir), num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler, optim=optim,
        **_warmup_kwargs(config_cls, config.warmup_ratio),
        bf16=use_bf16, fp16=device_type == "cuda" and not use_bf16,  # TRL defaults bf16 on
        # TRL defaults gradient checkpointing on (its own field): ~20x slower a step on CPU
        **{"gradient_checkpointing": gradient_checkpointing,
           **_checkpointing_kwargs(config_cls, gradient_checkpointing)},
        logging_strategy="steps", logging_steps=config.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=config.save_steps, save_total_limit=3,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=(config.eval_steps or config.save_steps) if eval_data is not None else None,
        seed=config.seed, data_seed=config.seed, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=device_type == "cpu", **extra)

    bridge = _make_bridge(hooks, device_type, curve)

    class Rewards(TrainerCallback):  # runs before the bridge: the step's rewards reach on_log
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                hooks.latest = {k.split("/")[-1]: round(float(logs[k]), 6)
                                for k in REWARD_KEYS if k in logs}

    trainer = trainer_cls(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                          processing_class=tokenizer, callbacks=[Rewards(), bridge])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    resume_from = last_complete_checkpoint(ckpt_dir)
    if resume_from:
        prior = artifacts.read_loss_curve(out / artifacts.LOSS_CURVE_FILE)
        curve.extend(p for p in prior if p.get("step", 0) <= _checkpoint_step(resume_from))
        hooks.on_event("info", f"resuming from {resume_from}",
                       {"kind": "resumed", "checkpoint": resume_from,
                        "step": _checkpoint_step(resume_from)})
    cpu0 = time.process_time()
    output = trainer.train(resume_from_checkpoint=resume_from)
    state = trainer.state
    steps_run = int(state.global_step) - (_checkpoint_step(resume_from) if resume_from else 0)
    status = "cancelled" if bridge.cancelled else "completed"
    curve_path = artifacts.write_loss_curve(out / artifacts.LOSS_CURVE_FILE, curve)
    margins = [p["margins"] for p in curve if p.get("margins") is not None]
    result = TrainResult(
        status=status, output_dir=str(out), adapter_dir=None, base_model=config.base_model,
        base_model_path=resolved.path, device=device_type, method=config.method,
        global_step=int(state.global_step), max_steps=int(state.max_steps),
        epoch=float(state.epoch or 0.0),
        train_loss=float(output.training_loss) if steps_run > 0 else None,
        final_loss=bridge.last_loss, eval_loss=bridge.last_eval_loss,
        tokens_processed=int(state.num_input_tokens_seen - bridge._tokens0), tokens_per_s=None,
        runtime_s=round(float(output.metrics.get("train_runtime", 0.0)), 3),
        runtime_cpu_s=round(time.process_time() - cpu0, 3), total_s=0.0,
        peak_memory=memory_snapshot(device_type), resumed_from=resume_from, fallbacks=fallbacks,
        data={**data_info, "init_adapter": init_adapter,
              "reward_margin": {"first": margins[0], "last": margins[-1]} if margins else None},
        loss_curve_path=str(curve_path))
    if bridge.compute_s > 0 and result.tokens_processed > 0:
        result.tokens_per_s = round(result.tokens_processed / bridge.compute_s, 1)
    if status == "completed":
        result.adapter_dir = str(artifacts.save_adapter(model, tokenizer, out / ADAPTER_DIR,
                                                        base_model_path=resolved.path))
        if not init_adapter:
            result.serve_commands = artifacts.vllm_serve_commands(
                resolved.path, result.adapter_dir, name=adapter_name or "adapter",
                lora_r=config.lora_r)
    result.total_s = round(time.perf_counter() - t_start, 3)
    result.training_config_path = str(artifacts.write_training_config(
        out / artifacts.TRAINING_CONFIG_FILE, config, resolved_base_model=asdict(resolved),
        dataset={"manifest": dataset_manifest or {}, **data_info}, result=result.to_dict()))
    hooks.on_event("info" if status == "completed" else "warning",
                   f"training {status} at step {result.global_step}/{result.max_steps}",
                   {"kind": "finished", "status": status, "global_step": result.global_step,
                    "train_loss": result.train_loss, "reward_margin": result.data["reward_margin"],
                    "adapter_dir": result.adapter_dir})
    del trainer, model
    if device_type == "cuda":
        torch.cuda.empty_cache()
    return result


def merge_chain(base_model_path: str, adapters: list[str], out_dir: str | os.PathLike,
                dtype: str = "float32") -> Path:
    """Merge ``adapters`` in order into an unquantized copy of the base and save it: a
    preference job from an SFT adapter is base + SFT adapter + its own adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=getattr(torch, dtype))
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    last = Path(adapters[-1])
    AutoTokenizer.from_pretrained(str(last) if (last / "tokenizer_config.json").is_file()
                                  else base_model_path).save_pretrained(str(out))
    return out
