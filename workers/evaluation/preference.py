"""The preference evaluation runner (``preferences.evaluate``), under the job kit's lease.

The run's items (one ``PreferenceEvalItem`` per frozen item of the split) are inserted first,
idempotently; then the work fills them in batches, each batch's rows and the run's counters in
one transaction fenced by ``lease.guard``, so a resumed run does only what is missing and a run
that lost its lease writes nothing.

* ``reward_accuracy``: the policy and the reference model are both loaded; each batch scores
  ``log p(chosen|prompt)`` and ``log p(rejected|prompt)`` under both (the summed log-probability
  of the answer's tokens after the chat-templated prompt, as TRL's DPO computes it).
* ``win_rate``: the candidate answers every prompt (``outputs.candidate``), then the baseline
  (``outputs.baseline``), one local model loaded at a time (or an endpoint, concurrently); then
  the judge compares each pair in both orders.

Cancel is read between batches; the run then closes ``cancelled``. torch is imported only for
local models.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.evaluation import preference as preference_eval
from service.generation import llm
from service.generation import service as generation_service
from service.generation.ratelimit import provider_limiter
from service.models import (
    LLMProvider,
    PreferenceEvalItem,
    PreferenceEvalRun,
    PreferenceVersionItem,
    TrainingJob,
)
from service.models.preference import Outcome
from service.preferences import judge as judge_mod
from service.preferences.jobs import EVALUATE
from workers import jobs as kit

log = logging.getLogger(__name__)


def run(run_id: int) -> dict[str, Any]:
    """Task body for ``preferences.evaluate``."""
    return kit.drive(EVALUATE, run_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        run_row = db.get(PreferenceEvalRun, lease.row_id)
        if run_row is None:
            raise kit.LeaseLost(f"preference evaluation {lease.row_id}")
        db.expunge(run_row)
    _seed(lease, run_row)
    if run_row.kind == "reward_accuracy":
        _rewards(lease, run_row)
    else:
        _win_rate(lease, run_row)
    return _finish(lease, run_row)


# -- rows --------------------------------------------------------------------------------------

def _insert_ignore(db: Session, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    db.execute(dialect.insert(PreferenceEvalItem).values(rows)
               .on_conflict_do_nothing(index_elements=["run_id", "item_id"]))


def _seed(lease: kit.Lease, run_row: PreferenceEvalRun) -> None:
    with get_sessionmaker()() as db:
        stmt = select(PreferenceVersionItem.id).where(
            PreferenceVersionItem.version_id == run_row.preference_version_id,
            PreferenceVersionItem.split == run_row.split)
        if run_row.kind == "reward_accuracy":
            stmt = stmt.where(PreferenceVersionItem.outcome == Outcome.preferred.value)
        ids = [int(i) for i in db.scalars(stmt.order_by(PreferenceVersionItem.position))]
        for start in range(0, len(ids), 500):
            _insert_ignore(db, [{"run_id": run_row.id, "item_id": i, "outputs": {},
                                 "created_at": utcnow()} for i in ids[start:start + 500]])
        lease.guard(db, total=len(ids))
        db.commit()


def _pending(run_id: int, *, after: int, limit: int, missing: str | None = None
             ) -> tuple[list[dict[str, Any]], int | None]:
    """Rows after ``after`` not yet scored (nor failed), with ``missing``: only those without
    that output; and the last row id read (None: no row is left)."""
    with get_sessionmaker()() as db:
        rows = db.execute(select(PreferenceEvalItem, PreferenceVersionItem).join(
            PreferenceVersionItem, PreferenceVersionItem.id == PreferenceEvalItem.item_id).where(
            PreferenceEvalItem.run_id == run_id, PreferenceEvalItem.id > after,
            PreferenceEvalItem.scores.is_(None), PreferenceEvalItem.error.is_(None))
            .order_by(PreferenceEvalItem.id).limit(limit)).all()
    out = [{"id": e.id, "prompt": v.prompt, "chosen": v.chosen,
            "rejected": (v.rejected or [""])[0], "outputs": dict(e.outputs or {})}
           for e, v in rows if not (missing and missing in (e.outputs or {}))]
    return out, (rows[-1][0].id if rows else None)


def _write(lease: kit.Lease, updates: list[tuple[int, dict[str, Any]]]) -> None:
    """Rows' new values and the run's counters, in one fenced transaction."""
    m = PreferenceEvalRun
    done = sum(1 for _, v in updates if v.get("scores") is not None)
    failed = sum(1 for _, v in updates if v.get("error"))
    with get_sessionmaker()() as db:
        try:
            for row_id, values in updates:
                db.execute(update(PreferenceEvalItem).where(PreferenceEvalItem.id == row_id)
                           .values(**values).execution_options(synchronize_session=False))
            lease.guard(db, done=m.done + done, failed=m.failed + failed)
        except kit.LeaseLost:
            db.rollback()
            raise
        db.commit()


def _batches(run_id: int, size: int, missing: str | None = None
             ) -> Iterator[list[dict[str, Any]]]:
    after: int | None = 0
    while after is not None:
        items, after = _pending(run_id, after=after, limit=size, missing=missing)
        if items:
            yield items


def _finish(lease: kit.Lease, run_row: PreferenceEvalRun) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        rows = db.execute(select(PreferenceEvalItem.scores, PreferenceEvalItem.error).where(
            PreferenceEvalItem.run_id == run_row.id).order_by(PreferenceEvalItem.id)).all()
    scores = [s for s, err in rows if s is not None and err is None]
    errors = [err for _, err in rows if err]
    aggregate = preference_eval.aggregate(run_row.kind, scores)
    status = "failed" if errors and not scores else "succeeded"
    error = f"{len(errors)} item(s) failed; first error: {errors[0]}"[:4000] if errors else None
    lease.finish(status, done=len(scores), failed=len(errors), aggregate=aggregate, error=error)
    return {"status": status, "done": len(scores), "failed": len(errors)}


# -- local models ------------------------------------------------------------------------------

def chain_of(spec: dict[str, Any]) -> tuple[str, list[str]]:
    """``(base model, adapters merged onto it in order)`` of a local model spec: a preference
    job that started from an SFT job is base + the SFT adapter + its own."""
    if spec["kind"] == "base":
        return spec["base_model"], []
    with get_sessionmaker()() as db:
        job = db.get(TrainingJob, spec["training_job_id"])
        if job is None or not (job.artifacts or {}).get("adapter_dir"):
            raise RuntimeError(f"training job {spec['training_job_id']} or its adapter is gone")
        base = (job.artifacts or {}).get("base_model_path") or job.base_model
        adapters = [job.artifacts["adapter_dir"]]
        sft_id = (job.hyperparameters or {}).get("sft_job_id")
        if sft_id and job.method in preference_eval.PREFERENCE_METHODS:
            sft = db.get(TrainingJob, sft_id)
            if sft is None or not (sft.artifacts or {}).get("adapter_dir"):
                raise RuntimeError(f"the SFT job {sft_id} this job started from is gone")
            adapters.insert(0, sft.artifacts["adapter_dir"])
    return base, adapters


def load_local(spec: dict[str, Any]) -> Any:
    """A ``workers.evaluation.local.LocalModel`` with the spec's adapters merged."""
    import torch
    from transformers import AutoModelForCausalLM

    from workers.evaluation import local
    from workers.training.models import CHATML_TEMPLATE, load_tokenizer, resolve_base_model

    base, adapters = chain_of(spec)
    resolved = resolve_base_model(base, cache_dir=get_settings().local_model_cache)
    tok_src = next((a for a in reversed(adapters) if (Path(a) / "tokenizer_config.json").is_file()),
                   resolved.path)
    tokenizer = load_tokenizer(tok_src)
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE  # as training does
    tokenizer.padding_side = "left"
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (
        torch.float16 if cuda else torch.float32)
    model: Any = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype)
    for adapter in adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    device = "cuda" if cuda else "cpu"
    model.to(device).eval()
    return local.LocalModel(key=(base, ",".join(adapters) or None), tokenizer=tokenizer,
                            model=model, device=device, base_path=resolved.path)


def _free() -> None:
    """After the caller dropped its models: give their memory back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _completion_ids(tokenizer: Any, prompt: list[dict[str, Any]], answer: str) -> tuple[list[int], list[int]]:
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}],
                                         tokenize=False)
    tail = full[len(head):] if full.startswith(head) else answer + (tokenizer.eos_token or "")
    return (tokenizer(head, add_special_tokens=False)["input_ids"],
            tokenizer(tail, add_special_tokens=False)["input_ids"])


def answer_logps(lm: Any, pairs: list[tuple[list[dict[str, Any]], str]], max_length: int) -> list[float]:
    """Summed log-probability of each answer's tokens after its chat-templated prompt."""
    import torch

    seqs = []
    for prompt, answer in pairs:
        p, c = _completion_ids(lm.tokenizer, prompt, answer)
        c = c[:max(1, max_length - 1)]
        p = p[-max(1, max_length - len(c)):]
        seqs.append((p, c))
    width = max(len(p) + len(c) for p, c in seqs)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for row, (p, c) in enumerate(seqs):
        ids[row, :len(p) + len(c)] = torch.tensor(p + c)
        attn[row, :len(p) + len(c)] = 1
        mask[row, len(p):len(p) + len(c)] = True
    with torch.inference_mode():
        logits = lm.model(input_ids=ids.to(lm.device), attention_mask=attn.to(lm.device)).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = ids[:, 1:].to(lm.device)
        token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        summed = (token_logp * mask[:, 1:].to(lm.device)).sum(-1)
    return [float(v) for v in summed.cpu()]


def _rewards(lease: kit.Lease, run_row: PreferenceEvalRun) -> None:
    settings = dict(run_row.settings or {})
    beta = float(settings.get("beta") or 0.1)
    batch = int(settings.get("batch_size") or 8)
    max_length = int(settings.get("max_length") or 1024)
    policy = load_local(run_row.models["policy"])
    reference = load_local(run_row.models["reference"])
    for items in _batches(run_row.id, batch):
        lease.check()
        pairs = [(it["prompt"], ans) for it in items for ans in (it["chosen"], it["rejected"])]
        pol = answer_logps(policy, pairs, max_length)
        ref = answer_logps(reference, pairs, max_length)
        updates = []
        for n, it in enumerate(items):
            pc, pr, rc, rr = pol[2 * n], pol[2 * n + 1], ref[2 * n], ref[2 * n + 1]
            chosen_r, rejected_r = beta * (pc - rc), beta * (pr - rr)
            updates.append((it["id"], {"scores": {
                "chosen_logp": pc, "rejected_logp": pr, "ref_chosen_logp": rc,
                "ref_rejected_logp": rr, "chosen_reward": chosen_r, "rejected_reward": rejected_r,
                "margin": chosen_r - rejected_r, "correct": 1.0 if chosen_r > rejected_r else 0.0}}))
        _write(lease, updates)
    del policy, reference
    _free()


# -- win rate ----------------------------------------------------------------------------------

def _answer_side(lease: kit.Lease, run_row: PreferenceEvalRun, side: str) -> None:
    spec = run_row.models[side]
    settings = dict(run_row.settings or {})
    gen = {"temperature": float(settings.get("temperature") or 0.0),
           "max_tokens": int(settings.get("max_tokens") or 256)}
    if settings.get("seed") is not None:
        gen["seed"] = int(settings["seed"])
    batch = int(settings.get("batch_size") or 8)
    if preference_eval.is_local(spec):
        from workers.evaluation import local

        lm = load_local(spec)
        for items in _batches(run_row.id, batch, missing=side):
            lease.check()
            outs = local.generate(lm, [it["prompt"] for it in items], gen)
            _write(lease, [(it["id"], _answered(it, side, o.text, o.error))
                           for it, o in zip(items, outs, strict=True)])
        del lm
        _free()
        return
    with get_sessionmaker()() as db:
        provider = db.get(LLMProvider, spec["provider_id"])
        if provider is None:
            raise RuntimeError(f"the {side} provider was deleted")
        db.expunge(provider)
    chat_settings = generation_service.provider_settings(provider)
    limiter = provider_limiter(provider)

    def one(item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            res = llm.chat(chat_settings, item["prompt"], params=gen, limiter=limiter)
            return item["id"], _answered(item, side, res.content, None)
        except llm.LLMError as exc:
            return item["id"], _answered(item, side, None, exc.message)

    with ThreadPoolExecutor(max_workers=max(1, provider.max_concurrency)) as pool:
        for items in _batches(run_row.id, max(batch, provider.max_concurrency * 2), missing=side):
            lease.check()
            _write(lease, list(pool.map(one, items)))


def _answered(item: dict[str, Any], side: str, text: str | None, error: str | None) -> dict[str, Any]:
    if error or text is None:
        return {"outputs": item["outputs"], "error": f"{side} answer failed: {error}"}
    return {"outputs": {**item["outputs"], side: text}}


def _win_rate(lease: kit.Lease, run_row: PreferenceEvalRun) -> None:
    for side in ("candidate", "baseline"):
        _answer_side(lease, run_row, side)
    with get_sessionmaker()() as db:
        provider = db.get(LLMProvider, run_row.judge_provider_id) if run_row.judge_provider_id else None
        if provider is None:
            raise RuntimeError("the judge provider was deleted")
        db.expunge(provider)
    chat: Callable[..., Any] = judge_mod.provider_chat(provider, (run_row.settings or {}).get("judge_params"))

    def one(item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        out = item["outputs"]
        try:
            j = judge_mod.judge_pair(chat, item["prompt"], out["candidate"], out["baseline"])
        except (llm.LLMError, judge_mod.NoVerdict) as exc:
            return item["id"], {"error": f"judge: {getattr(exc, 'message', None) or exc}"[:2000]}
        return item["id"], {
            "outputs": {**out, "verdicts": j.verdicts, "judge_replies": j.replies},
            "scores": {"score": j.score, "consistent": j.consistent,
                       "judge_tokens": j.prompt_tokens + j.completion_tokens}}

    with ThreadPoolExecutor(max_workers=max(1, provider.max_concurrency)) as pool:
        for items in _batches(run_row.id, max(8, provider.max_concurrency * 2)):
            lease.check()
            _write(lease, list(pool.map(one, items)))
