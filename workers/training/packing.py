"""Padding-free packing: a batch's sequences laid end to end in rows, no sample seeing another.

:class:`PackedCollator` takes the batch the sampler chose (the same samples a padded batch would
hold, so the loss of every step is the padded step's) and packs it first-fit-decreasing into rows
of at most ``max_length`` tokens (the run's ``max_seq_length``), LLaMA-Factory "neat packing"
style. Each sample's ``position_ids`` restart at 0 and the label of its first token is -100 (it
would otherwise be predicted from the previous sample's last token; in a padded batch the causal
shift drops that label too). A row that is not full ends in filler: pad tokens, labels -100,
positions restarting at 0, i.e. one more sequence that nothing attends to (it comes last).

Why rows and not one row of the whole batch (``transformers.DataCollatorWithFlattening``): on CPU
SDPA attends through the row x row block-diagonal mask, so one row of ~1,000 tokens costs about
twice the padded batch's attention (measured 2026-12-01); rows bounded by ``max_seq_length`` keep
the attention per row as cheap as a padded row's while the padding disappears. The row width is
chosen per batch (the bin capacity from the longest sample up to ``max_length`` that needs the
fewest token slots). Flash-attention implementations read sequence boundaries from
``position_ids`` and run varlen kernels, so there ``max_length=None`` gives one row.

No ``attention_mask`` is returned on purpose: transformers (5.x,
``masking_utils._preprocess_mask_arguments``) only derives the block-diagonal causal mask of each
row from its restarting ``position_ids`` when the mask is ``None`` and there is no KV cache
(``config.use_cache = False``, as ``train`` sets it), for every mask interface (sdpa, eager,
flex). A model whose attention does not go through that code would let each sequence attend to
the ones before it in the row, so nothing is assumed: :func:`packing_leak` runs the loaded model
(attention implementation, dtype and quantization as trained) on a batch of two packed rows that
differ only in the first sequence and on the second sequence alone, and packing is used only when
the second sequence's outputs match. Otherwise (or with ``packing="off"``) batches stay padded and
the sampler groups samples of similar length (``group_by_length``), which cuts most of the padding
too.

The rows' filler is not padding by token id (pad is often EOS, which real samples contain), so a
packed batch carries its real token count under :data:`NUM_TOKENS_KEY`; ``train`` pops it before
the forward pass and counts it as the tokens seen.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "NUM_TOKENS_KEY",
    "PackedCollator",
    "PackingPlan",
    "pack_rows",
    "packed_collator",
    "packed_trainer_class",
    "packing_leak",
    "resolve_packing",
]

NUM_TOKENS_KEY = "num_tokens"


@dataclass
class PackingPlan:
    requested: str  # the config's packing: auto | on | off
    packed: bool  # padding-free rows (PackedCollator)
    bucketed: bool  # padded batches of similar lengths (group_by_length)
    reason: str
    row_length: int | None = None  # packed rows' bound in tokens; None = one row per batch

    @property
    def mode(self) -> str:
        return "packed" if self.packed else "bucketed" if self.bucketed else "padded"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode}


def _first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` in bins of at most ``capacity`` (each length fits alone)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def pack_rows(lengths: list[int], max_length: int | None) -> list[list[int]]:
    """Group sample indices into rows: one row when ``max_length`` is None, else the
    first-fit-decreasing packing, over bin capacities from the longest sample to ``max_length``,
    with the fewest token slots (rows x widest row); ties go to the narrower rows."""
    if not lengths:
        return []
    longest = max(lengths)
    if max_length is None or sum(lengths) <= longest:
        return [list(range(len(lengths)))]
    best, best_key = None, None
    for capacity in range(longest, max(longest, max_length) + 1):
        rows = _first_fit_decreasing(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in rows)
        key = (len(rows) * width, width)
        if best_key is None or key < best_key:
            best, best_key = rows, key
        if len(rows) == 1:  # a wider capacity cannot do better than one full row
            break
    return best


class PackedCollator:
    """Packs a batch's examples into rows (see the module docstring). Returns ``input_ids``,
    ``labels``, ``position_ids`` of shape (rows, width) and ``NUM_TOKENS_KEY``: the real tokens."""

    def __init__(self, pad_token_id: int, max_length: int | None):
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        rows = pack_rows(lengths, self.max_length)
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                k = lengths[i]
                input_ids[r, at : at + k] = torch.tensor(features[i]["input_ids"], dtype=torch.long)
                labels[r, at + 1 : at + k] = torch.tensor(
                    features[i]["labels"][1:], dtype=torch.long
                )
                position_ids[r, at : at + k] = torch.arange(k)
                at += k
            position_ids[r, at:] = torch.arange(width - at)  # the filler: its own sequence, last
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            NUM_TOKENS_KEY: sum(lengths),
        }


def packed_collator(pad_token_id: int = 0, max_length: int | None = None) -> PackedCollator:
    """A :class:`PackedCollator`; the defaults give one row per batch."""
    return PackedCollator(pad_token_id, max_length)


def packing_leak(
    model, *, lengths: tuple[int, int] = (7, 9), seed: int = 0, batched: bool = True
) -> str | None:
    """``None`` when packing is exact for ``model``; else what differed.

    Row 1 = [a, b], row 2 = [a', b] with ``a != a'`` of the same length, both with restarting
    ``position_ids`` and no attention mask, and b alone. b's log-probabilities must be the same in
    all three (up to float noise): a difference between the rows means b attends to its
    predecessor; a difference from b alone means the positions are not restarted. With
    ``batched`` the two rows run as one batch, as :class:`PackedCollator`'s rows do.
    """
    import torch

    vocab = int(model.get_input_embeddings().weight.shape[0])
    device = model.get_input_embeddings().weight.device
    g = torch.Generator().manual_seed(seed)
    la, lb = lengths
    a, a2, b = (torch.randint(0, vocab, (n,), generator=g) for n in (la, la, lb))
    positions = torch.cat([torch.arange(la), torch.arange(lb)])

    def logprobs(ids, position_ids):
        # no use_cache argument: the model runs as the Trainer will run it (with a cache, even an
        # empty one, transformers builds a plain causal mask and packed sequences see each other)
        out = model(input_ids=ids.to(device), position_ids=position_ids.to(device))
        return torch.log_softmax(out.logits[:, -lb:].float(), dim=-1)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows = [torch.cat([a, b]), torch.cat([a2, b])]
            if batched:
                row1, row2 = logprobs(torch.stack(rows), torch.stack([positions, positions]))
            else:
                row1, row2 = (logprobs(row[None], positions[None])[0] for row in rows)
            alone = logprobs(b[None], torch.arange(lb)[None])[0]
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


def resolve_packing(
    requested: str, model, *, batch_size: int, max_length: int | None = None
) -> PackingPlan:
    """Decide how batches are formed. ``on`` raises where packing would not be exact.

    ``max_length`` bounds packed rows (the run's ``max_seq_length``); flash-attention models get
    one row per batch whatever it is (their varlen kernels cost no more for one long row)."""
    if requested == "off":
        return PackingPlan(
            requested, False, True, "packing off in the config: length-bucketed padded batches"
        )
    if batch_size == 1 and requested == "auto":
        return PackingPlan(requested, False, False, "batch_size 1: nothing to pad or pack")
    attn = getattr(model.config, "_attn_implementation", None) or "default"
    one_row = max_length is None or "flash" in attn
    leak = packing_leak(model, batched=not one_row)
    if leak is None:
        rows = "one row per batch" if one_row else f"rows of up to {max_length} tokens"
        return PackingPlan(
            requested,
            True,
            False,
            f"padding-free packing, {rows} ({attn} attention verified: no attention across packed sequences)",
            row_length=None if one_row else max_length,
        )
    if requested == "on":
        raise ValueError(
            f"packing='on' but this model ({attn} attention) cannot pack exactly: {leak}; "
            "use packing 'auto' or 'off'"
        )
    return PackingPlan(
        requested,
        False,
        True,
        f"packing not exact with {attn} attention ({leak}): length-bucketed padded batches instead",
    )


def packed_trainer_class(trainer_cls):
    """``trainer_cls`` that counts a packed batch's real tokens and keeps that count from the model."""

    class PackedTrainer(trainer_cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self.state.num_input_tokens_seen += int(inputs.pop(NUM_TOKENS_KEY))
            return super().training_step(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs.pop(NUM_TOKENS_KEY, None)
            return super().prediction_step(
                model, inputs, prediction_loss_only, ignore_keys=ignore_keys
            )

    return PackedTrainer
