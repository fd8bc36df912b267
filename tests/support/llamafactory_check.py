"""Run LLaMA-Factory's own data pipeline over an annotune export folder, in a child process.

    python -m tests.support.llamafactory_check <export_dir> <tokenizer_dir> <output_dir> [stage]

Loads every dataset named in the folder's ``dataset_info.json`` the way ``llamafactory-cli train``
does (``get_dataset_list`` → ``_get_merged_dataset``: load the file, align it with the declared
formatting and columns/tags) and then tokenises them with the SFT processor and the ``default``
template (``get_dataset``), which drops every example whose roles or turn count it rejects.
``stage`` ``rm`` (what LLaMA-Factory's ``dpo``, ``orpo`` and ``rm`` workflows load data with) reads
``ranking`` datasets instead: an aligned record is valid with a prompt and exactly two responses
(chosen, rejected), and tokenising uses the pairwise processor.
Prints one JSON line: for each dataset the records in the file, the aligned records with a
prompt and one response, and the tokenised examples; plus the first aligned record.

LLaMA-Factory imports ``torchaudio`` and ``av`` for its multimodal plugins at import time; they
are not installed here (and have no part in a text-only SFT dataset), so this process registers
empty stand-ins for them before importing it. It runs in its own process so that those stand-ins
never reach the test process.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types


def _stand_ins() -> None:
    for name in ("torchaudio", "av"):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules.setdefault(name, module)


def main(export_dir: str, tokenizer_dir: str, output_dir: str, stage: str = "sft") -> dict:
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    _stand_ins()
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import AutoTokenizer, Seq2SeqTrainingArguments

    with open(os.path.join(export_dir, "dataset_info.json"), encoding="utf-8") as fh:
        names = list(json.load(fh))
    model_args = ModelArguments(model_name_or_path=tokenizer_dir)
    data_args = DataArguments(dataset=",".join(names), dataset_dir=export_dir, template="default",
                              cutoff_len=2048, overwrite_cache=True)
    training_args = Seq2SeqTrainingArguments(output_dir=output_dir, do_train=True, report_to=[])
    aligned = _get_merged_dataset(names, model_args, data_args, training_args, stage=stage,
                                  return_dict=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    out: dict = {"datasets": {}, "first": None}
    for name in names:
        rows = aligned[name]
        responses = 2 if stage == "rm" else 1
        kept = sum(1 for r in rows if r["_prompt"] and len(r["_prompt"]) % 2 == 1
                   and len(r["_response"]) == responses)
        one = DataArguments(dataset=name, dataset_dir=export_dir, template="default",
                            cutoff_len=2048, overwrite_cache=True)
        module = get_dataset(template, model_args, one, training_args, stage=stage,
                             tokenizer=tokenizer)
        out["datasets"][name] = {"aligned": len(rows), "valid": kept,
                                 "tokenized": len(module["train_dataset"])}
        if out["first"] is None and len(rows):
            out["first"] = {k: rows[0][k] for k in ("_prompt", "_response", "_system")}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5]), ensure_ascii=False))
