"""One LoRA/QLoRA supervised fine-tuning run with ``transformers.Trainer`` and ``peft``.

``train(config, train_file=..., output_dir=..., callbacks=hooks)`` takes a :class:`TrainingConfig`,
OpenAI-messages JSONL files and a folder, and reports through :class:`TrainingHooks`; it knows
nothing about the database or HTTP. Layout of ``output_dir``::

    checkpoints/checkpoint-<step>/   resumable Trainer checkpoints (a rerun resumes from the last)
    adapter/                         adapter_model.safetensors, adapter_config.json, tokenizer
    training_config.json             config, resolved base model, dataset sha256s, fallbacks, result
    loss_curve.json                  every logged train/eval point
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from service.training.config import TrainingConfig

__all__ = [
    "TrainResult",
    "TrainingHooks",
    "TrainingHooksProtocol",
    "memory_snapshot",
    "resolve_device",
    "resolve_optimizer",
    "train",
]

logger = logging.getLogger(__name__)

from workers.training.runtime import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    _checkpoint_step,
    _checkpointing_kwargs,
    _sampling_kwargs,
    _warmup_kwargs,
    last_complete_checkpoint,
    memory_snapshot,
    resolve_device,
    resolve_optimizer,
)


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------
@runtime_checkable
class TrainingHooksProtocol(Protocol):
    def on_log(
        self,
        step: int,
        epoch: float,
        loss: float,
        learning_rate: float | None,
        grad_norm: float | None,
        tokens_per_s: float | None,
        memory: dict[str, float],
    ) -> None: ...

    def on_event(self, level: str, message: str, data: dict[str, Any]) -> None: ...

    def should_cancel(self) -> bool: ...

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None: ...


class TrainingHooks:
    """No-op base class; subclass and override what you need.

    - ``on_log``: every ``logging_steps`` optimizer steps (and the first and last step).
    - ``on_event(level, message, data)``: ``level`` is ``info``/``warning``; ``data["kind"]`` is
      one of, in order: ``started``, ``model_resolved``, ``fallback`` (any number, each also in
      ``TrainResult.fallbacks``), ``data_loaded``, ``model_loaded``, ``packing`` (how batches are
      formed: ``data["mode"]`` packed / bucketed / padded, also ``TrainResult.packing``), ``resumed`` (only when
      resuming), ``train_begin`` (carries ``max_steps`` and ``start_step``: use it for progress),
      then ``evaluated`` / ``cancel_requested`` during training, and ``finished`` last.
    - ``should_cancel()``: polled after every micro-batch (throttle a database lookup yourself);
      ``True`` stops training after the current step (no adapter is exported, checkpoints
      already written stay).
    - ``on_checkpoint(step, path, metrics)``: after a resumable checkpoint is written.

    Exceptions raised by a hook propagate and abort the run.
    """

    def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory) -> None:
        pass

    def on_event(self, level: str, message: str, data: dict[str, Any]) -> None:
        pass

    def should_cancel(self) -> bool:
        return False

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    status: str  # "completed" | "cancelled"
    output_dir: str
    adapter_dir: str | None
    base_model: str  # as configured
    base_model_path: str  # what was loaded (local folder, converted GGUF folder, or hub id)
    device: str
    method: str
    global_step: int
    max_steps: int
    epoch: float
    train_loss: float | None  # mean training loss over the steps run in this call
    final_loss: float | None  # last logged training loss
    eval_loss: float | None  # last validation loss
    tokens_processed: int  # non-padding tokens through the model in this call
    tokens_per_s: (
        float | None
    )  # tokens_processed / time spent in training steps (eval and saving excluded)
    runtime_s: float  # wall time inside Trainer.train (eval and checkpointing included)
    runtime_cpu_s: float  # CPU time of this process (all threads) inside Trainer.train
    total_s: float  # whole call: model resolution, loading, tokenization, training, export
    peak_memory: dict[str, float]
    resumed_from: str | None
    fallbacks: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    loss_curve_path: str | None = None
    training_config_path: str | None = None
    serve_commands: dict[str, str] = field(default_factory=dict)
    packing: dict[str, Any] = field(default_factory=dict)  # workers.training.packing.PackingPlan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Trainer callback bridging to the hooks
# --------------------------------------------------------------------------------------------
def _make_bridge(hooks: TrainingHooks, device_type: str, curve: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class HooksBridge(TrainerCallback):
        def __init__(self) -> None:
            self.cancelled = False
            self.last_loss: float | None = None
            self.last_eval_loss: float | None = None
            self._tokens0 = 0
            # Throughput counts only the time between on_step_begin and on_step_end (forward,
            # backward, optimizer), not evaluation or checkpoint writing.
            self.compute_s = 0.0
            self._step_t: float | None = None
            self._last_compute = 0.0
            self._last_tokens = 0

        def _check_cancel(self, state, control) -> None:
            if not self.cancelled and hooks.should_cancel():
                self.cancelled = True
                control.should_training_stop = True
                control.should_log = True
                hooks.on_event(
                    "warning",
                    "cancellation requested; stopping",
                    {"kind": "cancel_requested", "step": state.global_step},
                )

        def on_train_begin(self, args, state, control, **kwargs):
            self._tokens0 = self._last_tokens = state.num_input_tokens_seen
            hooks.on_event(
                "info",
                f"training steps {state.global_step + 1}..{state.max_steps}",
                {
                    "kind": "train_begin",
                    "max_steps": int(state.max_steps),
                    "start_step": int(state.global_step),
                    "num_train_epochs": int(state.num_train_epochs),
                    "total_batch_size": int(
                        args.per_device_train_batch_size * args.gradient_accumulation_steps
                    ),
                },
            )
            self._check_cancel(state, control)

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_t = time.perf_counter()

        def on_substep_end(self, args, state, control, **kwargs):
            self._check_cancel(state, control)

        def on_step_end(self, args, state, control, **kwargs):
            if self._step_t is not None:
                if (
                    device_type == "cuda"
                ):  # kernels run asynchronously: wait so the step time is real
                    import torch

                    torch.cuda.synchronize()
                self.compute_s += time.perf_counter() - self._step_t
                self._step_t = None
            self._check_cancel(state, control)
            if state.global_step >= state.max_steps:
                control.should_log = True  # always log the last step

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                tokens = state.num_input_tokens_seen
                dt = self.compute_s - self._last_compute
                tps = (
                    (tokens - self._last_tokens) / dt
                    if dt > 0 and tokens > self._last_tokens
                    else None
                )
                self._last_compute, self._last_tokens = self.compute_s, tokens
                loss = float(logs["loss"])
                self.last_loss = loss
                lr = logs.get("learning_rate")
                gn = logs.get("grad_norm")
                point = {
                    "step": state.global_step,
                    "epoch": round(float(state.epoch or 0.0), 4),
                    "loss": loss,
                    "learning_rate": float(lr) if lr is not None else None,
                    "grad_norm": float(gn) if gn is not None else None,
                    "tokens_per_s": round(tps, 1) if tps is not None else None,
                    "tokens_seen": int(tokens),
                }
                curve.append(point)
                hooks.on_log(
                    step=point["step"],
                    epoch=point["epoch"],
                    loss=loss,
                    learning_rate=point["learning_rate"],
                    grad_norm=point["grad_norm"],
                    tokens_per_s=point["tokens_per_s"],
                    memory=memory_snapshot(device_type),
                )
            if "eval_loss" in logs:
                self.last_eval_loss = float(logs["eval_loss"])
                curve.append(
                    {
                        "step": state.global_step,
                        "epoch": round(float(state.epoch or 0.0), 4),
                        "eval_loss": self.last_eval_loss,
                    }
                )
                hooks.on_event(
                    "info",
                    f"validation loss {self.last_eval_loss:.4f} at step {state.global_step}",
                    {
                        "kind": "evaluated",
                        "step": state.global_step,
                        "eval_loss": self.last_eval_loss,
                    },
                )

        def on_save(self, args, state, control, **kwargs):
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            metrics = {
                "epoch": state.epoch,
                "loss": self.last_loss,
                "eval_loss": self.last_eval_loss,
            }
            hooks.on_checkpoint(state.global_step, path, metrics)

    return HooksBridge()


# --------------------------------------------------------------------------------------------
# train()
# --------------------------------------------------------------------------------------------
def train(
    config: TrainingConfig,
    *,
    train_file: str | os.PathLike,
    eval_file: str | os.PathLike | None = None,
    output_dir: str | os.PathLike,
    callbacks: TrainingHooks | None = None,
    model_cache_dir: str | os.PathLike | None = None,
    dataset_manifest: dict[str, Any] | None = None,
    adapter_name: str | None = None,
) -> TrainResult:
    """Train a LoRA/QLoRA adapter on ``train_file``; see the module docstring for the output layout.

    Re-running with the same ``output_dir`` resumes from the last checkpoint in it.
    ``dataset_manifest`` (e.g. the dataset version id and export sha256) is copied into
    ``training_config.json``; ``adapter_name`` is used in the vLLM commands.
    """
    t_start = time.perf_counter()
    hooks = callbacks if callbacks is not None else TrainingHooks()
    if not isinstance(config, TrainingConfig):
        raise TypeError("config must be a TrainingConfig (use TrainingConfig.from_dict)")

    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from workers.training import artifacts
    from workers.training.data import PaddingCollator, build_dataset
    from workers.training.label_logits import label_logits_exact, label_logits_trainer_class
    from workers.training.models import CHATML_TEMPLATE, load_tokenizer, resolve_base_model
    from workers.training.packing import PackedCollator, packed_trainer_class, resolve_packing
    from workers.training.quantization import plan_quantization, prepare_kbit_model

    out = Path(output_dir)
    ckpt_dir = out / CHECKPOINTS_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    fallbacks: list[str] = []

    def fallback(message: str) -> None:
        fallbacks.append(message)
        hooks.on_event("warning", message, {"kind": "fallback"})

    device_type = resolve_device(config.device)
    hooks.on_event(
        "info",
        f"training {config.method} on {device_type}: {config.base_model}",
        {"kind": "started", "device": device_type, "config": config.to_dict()},
    )

    # -- base model ---------------------------------------------------------------------------
    resolved = resolve_base_model(config.base_model, cache_dir=model_cache_dir)
    hooks.on_event(
        "info",
        f"base model {config.base_model} -> {resolved.path} ({resolved.source}"
        + (", converted from GGUF" if resolved.converted else "")
        + ")",
        {"kind": "model_resolved", **asdict(resolved)},
    )

    plan = plan_quantization(config.method, device_type)
    for message in plan.fallbacks:
        fallback(message)
    optim, optim_fallbacks = resolve_optimizer(config.optim, device_type)
    for message in optim_fallbacks:
        fallback(message)
    if config.gradient_checkpointing is None:
        gradient_checkpointing = device_type == "cuda"
    else:
        gradient_checkpointing = config.gradient_checkpointing
        if gradient_checkpointing and device_type == "cpu":
            hooks.on_event(
                "warning",
                "gradient checkpointing on CPU is very slow (measured ~20x per step); kept because the config asks for it",
                {"kind": "fallback"},
            )

    transformers.set_seed(config.seed)

    # -- tokenizer and data -------------------------------------------------------------------
    tokenizer = load_tokenizer(resolved.path)
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token")
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
        fallback("tokenizer has no chat template: using ChatML (saved with the adapter)")
    train_data = build_dataset(
        tokenizer, train_file, max_seq_length=config.max_seq_length, max_samples=config.max_samples
    )
    if len(train_data) == 0:
        raise ValueError(
            f"{train_file}: no usable training sample (no assistant token within max_seq_length)"
        )
    eval_data = None
    if eval_file is not None:
        eval_data = build_dataset(tokenizer, eval_file, max_seq_length=config.max_seq_length)
        if len(eval_data) == 0:
            fallback(f"{eval_file}: no usable validation sample; validation loss is skipped")
            eval_data = None
    data_info = {
        "train": train_data.stats.to_dict(),
        "eval": eval_data.stats.to_dict() if eval_data else None,
    }
    hooks.on_event(
        "info",
        f"{train_data.stats.samples_used} training samples ({train_data.stats.tokens} tokens, "
        f"{train_data.stats.truncated} truncated, {train_data.stats.dropped_no_assistant_tokens} dropped)"
        + (f", {eval_data.stats.samples_used} validation samples" if eval_data else ""),
        {"kind": "data_loaded", **data_info},
    )

    # -- model --------------------------------------------------------------------------------
    t_load = time.perf_counter()
    load_kwargs: dict[str, Any] = {"dtype": plan.load_dtype}
    if plan.quantization_config is not None:
        load_kwargs["quantization_config"] = plan.quantization_config
        load_kwargs["device_map"] = {"": 0} if device_type == "cuda" else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(resolved.path, **load_kwargs)
    model.config.use_cache = False
    if plan.quantization_config is not None:
        model = prepare_kbit_model(model, gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    hooks.on_event(
        "info",
        f"model loaded in {time.perf_counter() - t_load:.1f}s: {trainable:,} trainable of {total:,} parameters",
        {
            "kind": "model_loaded",
            "trainable_parameters": int(trainable),
            "total_parameters": int(total),
            "quantized": plan.quantization_config is not None,
            "compute_dtype": str(plan.compute_dtype).replace("torch.", ""),
            "gradient_checkpointing": gradient_checkpointing,
            "optim": optim,
            "seconds": round(time.perf_counter() - t_load, 2),
        },
    )

    packing = resolve_packing(
        config.packing, model, batch_size=config.batch_size, max_length=config.max_seq_length
    )
    hooks.on_event("info", f"batches: {packing.reason}", {"kind": "packing", **packing.to_dict()})
    # the training loss from logits where a label is, when that equals the model's own loss
    split = label_logits_exact(model)
    hooks.on_event(
        "info",
        "loss: logits only where a label is" if split is None
        else f"loss: the model's own forward ({split})",
        {"kind": "label_logits", "used": split is None, "reason": split},
    )

    # -- trainer ------------------------------------------------------------------------------
    use_bf16 = device_type == "cuda" and str(plan.compute_dtype) == "torch.bfloat16"
    use_fp16 = device_type == "cuda" and not use_bf16
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        **_warmup_kwargs(TrainingArguments, config.warmup_ratio),
        optim=optim,
        bf16=use_bf16,
        fp16=use_fp16,
        **_checkpointing_kwargs(TrainingArguments, gradient_checkpointing),
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=3,
        eval_strategy="steps" if eval_data is not None else "no",
        eval_steps=(config.eval_steps or config.save_steps) if eval_data is not None else None,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=device_type == "cuda",
        use_cpu=device_type == "cpu",
        **_sampling_kwargs(TrainingArguments, packing.bucketed),
        # Packed rows carry their real token count (their filler is not padding by id, and pad
        # is often EOS): packed_trainer_class counts it instead.
        include_num_input_tokens_seen="no" if packing.packed else "non_padding",
    )
    curve: list[dict[str, Any]] = []
    bridge = _make_bridge(hooks, device_type, curve)
    trainer_cls = packed_trainer_class(Trainer) if packing.packed else Trainer
    if split is None:
        trainer_cls = label_logits_trainer_class(trainer_cls)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=PackedCollator(tokenizer.pad_token_id, packing.row_length)
        if packing.packed
        else PaddingCollator(
            tokenizer.pad_token_id, pad_to_multiple_of=8 if device_type == "cuda" else None
        ),
        processing_class=tokenizer,
        callbacks=[bridge],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    resume_from = last_complete_checkpoint(ckpt_dir)
    if resume_from:
        prior = artifacts.read_loss_curve(out / artifacts.LOSS_CURVE_FILE)
        curve.extend(
            point for point in prior if point.get("step", 0) <= _checkpoint_step(resume_from)
        )
        hooks.on_event(
            "info",
            f"resuming from {resume_from}",
            {"kind": "resumed", "checkpoint": resume_from, "step": _checkpoint_step(resume_from)},
        )

    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cpu0 = time.process_time()
    output = trainer.train(resume_from_checkpoint=resume_from)
    runtime_cpu = time.process_time() - cpu0
    state = trainer.state
    runtime = float(output.metrics.get("train_runtime", 0.0))
    tokens = int(state.num_input_tokens_seen - bridge._tokens0)
    compute_s = bridge.compute_s
    steps_run = int(state.global_step) - (_checkpoint_step(resume_from) if resume_from else 0)
    status = "cancelled" if bridge.cancelled else "completed"
    curve_path = artifacts.write_loss_curve(out / artifacts.LOSS_CURVE_FILE, curve)

    result = TrainResult(
        status=status,
        output_dir=str(out),
        adapter_dir=None,
        base_model=config.base_model,
        base_model_path=resolved.path,
        device=device_type,
        method=config.method,
        global_step=int(state.global_step),
        max_steps=int(state.max_steps),
        epoch=float(state.epoch or 0.0),
        train_loss=float(output.training_loss) if steps_run > 0 else None,
        final_loss=bridge.last_loss if bridge.last_loss is not None else _last(curve, "loss"),
        eval_loss=bridge.last_eval_loss
        if bridge.last_eval_loss is not None
        else _last(curve, "eval_loss"),
        tokens_processed=tokens,
        tokens_per_s=round(tokens / compute_s, 1) if compute_s > 0 else None,
        runtime_s=round(runtime, 3),
        runtime_cpu_s=round(runtime_cpu, 3),
        total_s=0.0,
        peak_memory=memory_snapshot(device_type),
        resumed_from=resume_from,
        fallbacks=fallbacks,
        data=data_info,
        loss_curve_path=str(curve_path),
        packing=packing.to_dict(),
    )

    if status == "completed":
        adapter_dir = artifacts.save_adapter(
            model, tokenizer, out / ADAPTER_DIR, base_model_path=resolved.path
        )
        result.adapter_dir = str(adapter_dir)
        result.serve_commands = artifacts.vllm_serve_commands(
            resolved.path, str(adapter_dir), name=adapter_name or "adapter", lora_r=config.lora_r
        )
    result.total_s = round(time.perf_counter() - t_start, 3)
    result.training_config_path = str(
        artifacts.write_training_config(
            out / artifacts.TRAINING_CONFIG_FILE,
            config,
            resolved_base_model=asdict(resolved),
            dataset={"manifest": dataset_manifest or {}, **data_info},
            result=result.to_dict(),
        )
    )
    hooks.on_event(
        "info" if status == "completed" else "warning",
        f"training {status} at step {result.global_step}/{result.max_steps}",
        {
            "kind": "finished",
            "status": status,
            "global_step": result.global_step,
            "train_loss": result.train_loss,
            "eval_loss": result.eval_loss,
            "tokens_per_s": result.tokens_per_s,
            "adapter_dir": result.adapter_dir,
        },
    )
    del trainer, model
    if device_type == "cuda":
        torch.cuda.empty_cache()
    return result


def _last(curve: list[dict[str, Any]], key: str) -> float | None:
    values = [point[key] for point in curve if point.get(key) is not None]
    return values[-1] if values else None
