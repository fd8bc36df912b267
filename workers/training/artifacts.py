"""Artifacts of a training run: adapter, training_config.json, loss curve, merged model, vLLM commands."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "LOSS_CURVE_FILE",
    "TRAINING_CONFIG_FILE",
    "merge_adapter",
    "read_loss_curve",
    "save_adapter",
    "vllm_serve_commands",
    "write_loss_curve",
    "write_training_config",
]

LOSS_CURVE_FILE = "loss_curve.json"
TRAINING_CONFIG_FILE = "training_config.json"
_DTYPES = ("float32", "float16", "bfloat16")
# vLLM accepts only these --max-lora-rank values (default 16).
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def save_adapter(
    model, tokenizer, out_dir: str | os.PathLike, *, base_model_path: str | None = None
) -> Path:
    """Save ``adapter_model.safetensors`` + ``adapter_config.json`` (+ tokenizer) of a peft model."""
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    config_path = out / "adapter_config.json"
    if not (out / "adapter_model.safetensors").is_file() or not config_path.is_file():
        raise RuntimeError(f"adapter was not written to {out}")
    if base_model_path:
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = base_model_path
        _write_json(config_path, adapter_config)
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_training_config(
    path: str | os.PathLike,
    config,
    *,
    resolved_base_model: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> Path:
    """``training_config.json``: config, resolved base model, dataset manifest with sha256s, result."""
    dataset = dataset or {}
    sha = {
        split: (dataset.get(split) or {}).get("sha256")
        for split in ("train", "eval")
        if dataset.get(split) is not None
    }
    data = {
        "config": config.to_dict(),
        "base_model": resolved_base_model,
        "dataset_sha256": sha,
        "dataset": dataset,
        "result": result,
        "versions": _versions(),
    }
    return _write_json(Path(path), data)


def write_loss_curve(path: str | os.PathLike, points: list[dict[str, Any]]) -> Path:
    """``{"train": [{step, epoch, loss, learning_rate, grad_norm, tokens_per_s}], "eval": [{step, eval_loss}]}``."""
    train = [p for p in points if "loss" in p]
    evals = [p for p in points if "eval_loss" in p]
    return _write_json(Path(path), {"train": train, "eval": evals})


def read_loss_curve(path: str | os.PathLike) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return list(data.get("train", [])) + list(data.get("eval", []))


def merge_adapter(
    base_model_path: str,
    adapter_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "bfloat16",
) -> Path:
    """Merge a LoRA adapter into an unquantized copy of the base model and save it (safetensors).

    The base is always reloaded in ``dtype`` (fp32/fp16/bf16) without quantization: merging into
    4-bit weights would round the LoRA delta away. A base folder that is itself saved quantized
    is refused.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base_config = AutoConfig.from_pretrained(base_model_path)
    quant = getattr(base_config, "quantization_config", None)
    if quant:
        method = (
            quant.get("quant_method")
            if isinstance(quant, dict)
            else getattr(quant, "quant_method", quant)
        )
        raise ValueError(
            f"{base_model_path} is saved quantized ({method}); merge needs the unquantized fp16/bf16/fp32 base"
        )
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(model, str(adapter_path))
    merged = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer_src = (
        str(adapter_path)
        if (Path(adapter_path) / "tokenizer_config.json").is_file()
        else base_model_path
    )
    AutoTokenizer.from_pretrained(tokenizer_src).save_pretrained(str(out))
    return out


def vllm_serve_commands(
    base_model: str,
    adapter_path: str,
    *,
    name: str = "adapter",
    lora_r: int | None = None,
    merged_path: str | None = None,
) -> dict[str, str]:
    """Commands that serve the result with vLLM.

    ``lora``: the base model with the adapter attached (``--max-lora-rank`` added when the rank is
    above vLLM's default of 16); ``merged``: a merged folder (from :func:`merge_adapter`; the path
    is a placeholder until one exists).
    """
    q = shlex.quote
    lora_cmd = (
        f"vllm serve {q(base_model)} --enable-lora --lora-modules {q(f'{name}={adapter_path}')}"
    )
    if lora_r is not None and lora_r > 16:
        rank = next((r for r in _VLLM_LORA_RANKS if r >= lora_r), lora_r)
        lora_cmd += f" --max-lora-rank {rank}"
    merged = merged_path or "<merged-model-dir>"
    merged_cmd = f"vllm serve {q(merged) if merged_path else merged} --served-model-name {q(name)}"
    return {"lora": lora_cmd, "merged": merged_cmd}
