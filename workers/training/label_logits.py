"""The loss from logits where a label is: the LM head and cross entropy skip unlabelled positions.

A causal LM's forward computes logits for every position (``rows x width x vocab``: for
SmolLM2 a 576 x 49,152 matrix product per token, then a softmax over 49,152 words), while the
supervised loss reads only the positions whose next token is labelled: the answer, not the
prompt, not a packed row's filler. :func:`label_loss` runs the model's decoder, keeps the hidden
states of the labelled positions (each row its own, which ``logits_to_keep`` cannot express: it
keeps the same positions in every row) and applies the output embedding to those alone. The
value is the model's own loss: cross entropy summed over labelled tokens, divided by the
Trainer's ``num_items_in_batch`` (or their count), in float32.

Nothing is assumed about the architecture: a model whose logits are more than
``lm_head(decoder(...).last_hidden_state)`` (a final soft-cap, a logit scale) would get a
different loss, so :func:`label_logits_exact` compares the two on a small batch once, after
the model is loaded, and the Trainer uses this path only when they agree.
"""
from __future__ import annotations

from typing import Any

__all__ = ["label_logits_exact", "label_logits_trainer_class", "label_loss"]


def _parts(model) -> tuple[Any, Any]:
    """The decoder body and the output embedding of a (PEFT-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def label_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """The causal-LM loss of ``inputs`` (with ``labels``), logits computed only where labelled."""
    import torch
    import torch.nn.functional as F

    decoder, head = _parts(model)
    labels = inputs["labels"]
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = decoder(**rest, use_cache=False).last_hidden_state
    # position t predicts token t+1: the label of a position is the next one's
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
    keep = shifted != -100
    targets = shifted[keep]
    logits = head(hidden[keep]).float()
    total = F.cross_entropy(logits, targets, reduction="sum")
    if num_items_in_batch is None:
        return total / keep.sum().clamp(min=1)
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def label_logits_exact(model, *, seed: int = 0) -> str | None:
    """``None`` when :func:`label_loss` equals the model's own loss; else what differed.

    Two rows of random tokens, the first position of each row and a span in the second
    unlabelled (as a prompt is), compared in eval mode without gradients.
    """
    import torch

    try:
        decoder, head = _parts(model)
    except (AttributeError, NotImplementedError) as exc:
        return f"no decoder/output embedding to split the forward at ({exc})"
    if decoder is None or head is None:
        return "no decoder/output embedding to split the forward at"
    vocab = int(model.get_input_embeddings().weight.shape[0])
    device = model.get_input_embeddings().weight.device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, 0] = -100
    labels[1, 1:6] = -100
    batch = {"input_ids": ids.to(device), "labels": labels.to(device)}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ours = label_loss(model, batch).item()
            theirs = model(**batch).loss.float().item()
    except Exception as exc:  # noqa: BLE001 - any failure means: use the model's own forward
        return f"the split forward failed ({type(exc).__name__}: {exc})"
    finally:
        model.train(was_training)
    dtype = model.get_input_embeddings().weight.dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if abs(ours - theirs) > tol * max(1.0, abs(theirs)):
        return f"the loss from the decoder and output embedding differs ({ours:.6g} vs {theirs:.6g})"
    return None


def label_logits_trainer_class(trainer_cls):
    """``trainer_cls`` whose training loss comes from :func:`label_loss` (evaluation unchanged)."""

    class LabelLogitsTrainer(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or "labels" not in inputs or not model.training:
                return super().compute_loss(
                    model, inputs, return_outputs=return_outputs,
                    num_items_in_batch=num_items_in_batch,
                )
            loss = label_loss(self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss scales it
            return loss

    return LabelLogitsTrainer
