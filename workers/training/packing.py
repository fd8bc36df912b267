"""Padding-free packing: a batch's sequences concatenated into one row, no sample seeing another.

:func:`packed_collator` is ``transformers.DataCollatorWithFlattening``: one row of all the batch's
tokens, ``position_ids`` restarting at 0 for each sequence, the label of each sequence's first
token set to -100 (it would otherwise be predicted from the previous sample's last token; in a
padded batch that label is never used either, the causal shift drops it). No ``attention_mask``
is returned on purpose: transformers (5.x, ``masking_utils._preprocess_mask_arguments``) only
derives a block-diagonal causal mask from restarting ``position_ids`` when the mask is ``None``
and there is no KV cache (``config.use_cache = False``, as ``train`` sets it), and it does so for every mask interface (sdpa, eager, flex; flash attention reads the sequence
boundaries from the ``position_ids``). A model whose attention does not go through that code
would let each sequence attend to the ones before it in the row, so nothing is assumed:
:func:`packing_leak` runs the loaded model (attention implementation, dtype and quantization as
trained) on two packed rows that differ only in the first sequence and on the second sequence
alone, and packing is used only when the second sequence's outputs match. Otherwise (or with
``packing="off"``) batches stay padded and the sampler groups samples of similar length
(``group_by_length``), which cuts most of the padding too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PackingPlan", "packed_collator", "packing_leak", "resolve_packing"]


@dataclass
class PackingPlan:
    requested: str  # the config's packing: auto | on | off
    packed: bool  # padding-free rows (DataCollatorWithFlattening)
    bucketed: bool  # padded batches of similar lengths (group_by_length)
    reason: str

    @property
    def mode(self) -> str:
        return "packed" if self.packed else "bucketed" if self.bucketed else "padded"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode}


def packed_collator():
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)


def packing_leak(model, *, lengths: tuple[int, int] = (7, 9), seed: int = 0) -> str | None:
    """``None`` when packing is exact for ``model``; else what differed.

    Row 1 = [a, b], row 2 = [a', b] with ``a != a'`` of the same length, both with restarting
    ``position_ids`` and no attention mask, and b alone. b's log-probabilities must be the same in
    all three (up to float noise): a difference between the rows means b attends to its
    predecessor; a difference from b alone means the positions are not restarted.
    """
    import torch

    vocab = int(model.get_input_embeddings().weight.shape[0])
    device = model.get_input_embeddings().weight.device
    g = torch.Generator().manual_seed(seed)
    la, lb = lengths
    a, a2, b = (torch.randint(0, vocab, (n,), generator=g) for n in (la, la, lb))
    positions = torch.cat([torch.arange(la), torch.arange(lb)]).unsqueeze(0).to(device)

    def logprobs(ids, position_ids):
        # no use_cache argument: the model runs as the Trainer will run it (with a cache, even an
        # empty one, transformers builds a plain causal mask and packed sequences see each other)
        out = model(input_ids=ids.unsqueeze(0).to(device), position_ids=position_ids)
        return torch.log_softmax(out.logits[0, -lb:].float(), dim=-1)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            row1 = logprobs(torch.cat([a, b]), positions)
            row2 = logprobs(torch.cat([a2, b]), positions)
            alone = logprobs(b, torch.arange(lb).unsqueeze(0).to(device))
    finally:
        model.train(was_training)
    dtype = model.get_input_embeddings().weight.dtype
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    leak = (row1 - row2).abs().max().item()  # same shapes: float noise is ~0 here
    if leak > tol:
        return f"a packed sequence's outputs change with the sequence before it (max |d log p| {leak:.3g})"
    # Different shapes, so different float rounding: compare on average (positions that do not
    # restart move every output of an absolute-position model; rotary ones are relative anyway).
    shift = (row1 - alone).abs().mean().item()
    if shift > tol:
        return f"a packed sequence's outputs differ from the same sequence alone (mean |d log p| {shift:.3g})"
    return None


def resolve_packing(requested: str, model, *, batch_size: int) -> PackingPlan:
    """Decide how batches are formed. ``on`` raises where packing would not be exact."""
    if requested == "off":
        return PackingPlan(requested, False, True, "packing off in the config: length-bucketed padded batches")
    if batch_size == 1 and requested == "auto":
        return PackingPlan(requested, False, False, "batch_size 1: nothing to pad or pack")
    attn = getattr(model.config, "_attn_implementation", None) or "default"
    leak = packing_leak(model)
    if leak is None:
        return PackingPlan(
            requested, True, False,
            f"padding-free packing ({attn} attention verified: no attention across packed sequences)",
        )
    if requested == "on":
        raise ValueError(f"packing='on' but this model ({attn} attention) cannot pack exactly: {leak}; "
                         "use packing 'auto' or 'off'")
    return PackingPlan(
        requested, False, True,
        f"packing not exact with {attn} attention ({leak}): length-bucketed padded batches instead",
    )
