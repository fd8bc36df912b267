"""4-bit NF4 loading (QLoRA) and k-bit training preparation, with the fallbacks spelled out.

On CUDA the compute dtype is bf16 (fp16 on GPUs without bf16). On CPU bitsandbytes 4-bit works
but bf16 compute is ~25x slower than float32 on CPUs without bf16 instructions, so CPU uses
float32 compute. Every such deviation from the textbook QLoRA recipe is returned as a short
sentence so the caller can report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuantizationPlan", "plan_quantization", "prepare_kbit_model", "supports_bf16"]


def supports_bf16(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False  # CPU: supported by torch, but far slower than fp32 without AMX/avx512_bf16


@dataclass
class QuantizationPlan:
    """What to pass to ``from_pretrained`` for a given method and device."""

    method: str
    device_type: str
    compute_dtype: Any  # torch.dtype
    quantization_config: Any | None  # transformers.BitsAndBytesConfig or None
    fallbacks: list[str] = field(default_factory=list)

    @property
    def load_dtype(self) -> Any:
        """dtype of the non-quantized weights (and of all weights for plain LoRA)."""
        return self.compute_dtype


def plan_quantization(method: str, device_type: str) -> QuantizationPlan:
    """Choose compute dtype and (for QLoRA) a ``BitsAndBytesConfig``: NF4 + double quantization."""
    import torch

    fallbacks: list[str] = []
    if device_type == "cuda":
        if supports_bf16("cuda"):
            dtype = torch.bfloat16
        else:
            dtype = torch.float16
            fallbacks.append("GPU without bf16 support: float16 compute instead of bfloat16")
    else:
        dtype = torch.float32
        fallbacks.append("CPU: float32 compute instead of bfloat16 (bf16 is very slow on this CPU)")

    if method != "qlora":
        return QuantizationPlan(method, device_type, dtype, None, fallbacks)

    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            f"method 'qlora' needs bitsandbytes, which failed to import ({exc}); install the [train] extra "
            "or choose method 'lora'"
        ) from exc
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=torch.uint8,
    )
    return QuantizationPlan(method, device_type, dtype, bnb, fallbacks)


def prepare_kbit_model(model, *, gradient_checkpointing: bool):
    """peft's k-bit preparation: freeze base weights, upcast norms/head to fp32, input grads on."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
    )
