"""Batch generation with a local model: a base model, or a base model with a LoRA adapter.

The prompt is rendered with the chat template of the base model's tokenizer (the one the adapter
was trained with), padded on the left, and decoded greedily unless a temperature is given. One
model is kept loaded per process (a gpu worker evaluates one run at a time); loading another
frees the previous one.
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LocalModel", "Output", "generate", "load", "unload"]


@dataclass
class Output:
    text: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    """Wall time of the forward passes of the batch the prompt was in."""
    error: str | None = None

    def __post_init__(self) -> None:
        """Decoded text may hold a NUL (a byte-fallback token such as ``<0x00>``), which
        PostgreSQL cannot store: removed, as in every model answer (``llm_types.LLMResult``)."""
        if self.text:
            from service.core.sanitize import strip_text

            self.text = strip_text(self.text)[0]


@dataclass
class LocalModel:
    key: tuple[str, str | None]
    tokenizer: Any
    model: Any
    device: str
    base_path: str


_lock = threading.Lock()
_current: LocalModel | None = None


def load(base_model: str, adapter_dir: str | None = None, *,
         cache_dir: str | Path | None = None) -> LocalModel:
    """Load ``base_model`` (name, folder or .gguf, as training resolves it) and its adapter.
    A ``base_model`` that is itself an adapter folder (a local provider's fine-tuned model)
    loads its base with that adapter."""
    global _current
    from workers.training.models import load_tokenizer, resolve_base_model, split_adapter

    if adapter_dir is None:
        base_model, adapter_dir = split_adapter(base_model)
    key = (base_model, adapter_dir)
    with _lock:
        if _current is not None and _current.key == key:
            return _current
        unload_locked()
        import torch
        from transformers import AutoModelForCausalLM

        resolved = resolve_base_model(base_model, cache_dir=cache_dir)
        tokenizer = load_tokenizer(resolved.path)
        tokenizer.padding_side = "left"
        cuda = torch.cuda.is_available()
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (
            torch.float16 if cuda else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
        if adapter_dir:
            from peft import PeftModel

            if not Path(adapter_dir).is_dir():
                raise FileNotFoundError(f"adapter folder not found: {adapter_dir}")
            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        device = "cuda" if cuda else "cpu"
        model.to(device).eval()
        _current = LocalModel(key=key, tokenizer=tokenizer, model=model, device=device,
                              base_path=resolved.path)
        return _current


def unload_locked() -> None:
    global _current
    if _current is None:
        return
    _current = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def unload() -> None:
    with _lock:
        unload_locked()


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def generate(lm: LocalModel, prompts: Sequence[Sequence[Mapping[str, Any]]],
             settings: Mapping[str, Any] | None = None) -> list[Output]:
    """One output per prompt (a list of ``{role, content}`` messages), in order."""
    import torch

    from service.generation.llm import split_reasoning

    settings = dict(settings or {})
    if not prompts:
        return []
    tokenizer, model = lm.tokenizer, lm.model
    template_kwargs = dict((settings.get("extra_body") or {}).get("chat_template_kwargs") or {})
    texts = [tokenizer.apply_chat_template([dict(m) for m in p], add_generation_prompt=True,
                                           tokenize=False, **template_kwargs) for p in prompts]
    temperature = float(settings.get("temperature") or 0.0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(tokenizer, model)
    gen_kwargs: dict[str, Any] = {"max_new_tokens": int(settings.get("max_tokens") or 256),
                                  "pad_token_id": pad_id, "do_sample": temperature > 0}
    if eos:
        gen_kwargs["eos_token_id"] = sorted(eos)
    if temperature > 0:
        gen_kwargs["temperature"] = temperature
        if settings.get("top_p") is not None:
            gen_kwargs["top_p"] = float(settings["top_p"])
    else:  # greedy: do not inherit sampling knobs from the model's generation_config
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    with _lock, torch.inference_mode():
        if settings.get("seed") is not None:
            torch.manual_seed(int(settings["seed"]))
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(lm.device) for k, v in enc.items()}
        started = time.perf_counter()
        out = model.generate(**enc, **gen_kwargs)
        elapsed_ms = int((time.perf_counter() - started) * 1000)
    prompt_len = enc["input_ids"].shape[1]
    results = []
    for row in range(len(prompts)):
        generated = out[row, prompt_len:].tolist()
        count = 0
        for token in generated:
            if token in eos:
                count += 1
                break
            if token == pad_id:
                break
            count += 1
        text = tokenizer.decode(generated[:count], skip_special_tokens=True)
        content, _reasoning = split_reasoning(text)
        results.append(Output(text=content, prompt_tokens=int(enc["attention_mask"][row].sum()),
                              completion_tokens=count, latency_ms=elapsed_ms))
    return results
