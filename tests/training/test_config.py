"""TrainingConfig and validate_hyperparameters: pure Python, no torch needed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from service.training.config import (
    TrainingConfig,
    TrainingConfigError,
    describe_fields,
    validate_hyperparameters,
)


def test_defaults_are_valid_and_follow_the_qlora_recipe():
    config = TrainingConfig()
    assert config.method == "qlora"
    assert config.optim == "paged_adamw_8bit"
    assert config.target_modules == "all-linear"
    assert config.device == "auto"
    assert config.gradient_checkpointing is None  # auto: on for CUDA, off for CPU
    assert validate_hyperparameters({}) == []


def test_every_field_has_help():
    for f in dataclasses.fields(TrainingConfig):
        assert f.metadata.get("help"), f.name
    described = {d["name"]: d for d in describe_fields()}
    assert set(described) == {f.name for f in dataclasses.fields(TrainingConfig)}
    assert described["method"]["choices"] == ["qlora", "lora"]
    assert described["lora_r"]["default"] == 16
    json.dumps(describe_fields())  # API-ready


def test_round_trip_through_json():
    config = TrainingConfig(
        method="lora", epochs=2, lora_r=8, target_modules=["q_proj", "v_proj"], max_steps=5
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert TrainingConfig.from_dict(data) == config


def test_coercions():
    config = TrainingConfig.from_dict(
        {"epochs": 2, "batch_size": 8.0, "lora_alpha": 16, "target_modules": "q_proj, v_proj"}
    )
    assert config.epochs == 2.0 and isinstance(config.epochs, float)
    assert config.batch_size == 8 and isinstance(config.batch_size, int)
    assert config.target_modules == ["q_proj", "v_proj"]
    assert TrainingConfig(method=" lora ").method == "lora"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "full"),
        ("epochs", 0),
        ("epochs", "3"),
        ("learning_rate", -1e-4),
        ("learning_rate", float("nan")),
        ("batch_size", 0),
        ("batch_size", True),
        ("batch_size", 2.5),
        ("gradient_accumulation", 0),
        ("max_seq_length", 8),
        ("warmup_ratio", 1.0),
        ("lr_scheduler", "exotic"),
        ("lora_r", 0),
        ("lora_alpha", 0),
        ("lora_dropout", 1.0),
        ("target_modules", []),
        ("target_modules", ["q_proj", "bad name"]),
        ("target_modules", ["all-linear", "q_proj"]),
        ("target_modules", 3),
        ("seed", -1),
        ("max_samples", 0),
        ("max_steps", 0),
        ("save_steps", 0),
        ("logging_steps", 0),
        ("gradient_checkpointing", "yes"),
        ("optim", "adam"),
        ("device", "tpu"),
        ("base_model", ""),
        ("base_model", None),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError) as excinfo:
        TrainingConfig(**{field: value})
    assert str(excinfo.value).startswith(f"{field}: ")
    assert isinstance(excinfo.value, TrainingConfigError)
    assert [name for name, _ in excinfo.value.errors] == [field]
    problems = validate_hyperparameters({field: value})
    assert [name for name, _ in problems] == [field]


def test_validate_collects_every_problem_and_unknown_keys():
    problems = validate_hyperparameters({"lora_r": 0, "epochs": -1, "nonsense": 1})
    assert sorted(name for name, _ in problems) == ["epochs", "lora_r", "nonsense"]
    assert dict(problems)["nonsense"] == "unknown field"
    assert validate_hyperparameters([1, 2]) == [("hyperparameters", "must be an object")]  # type: ignore[arg-type]
    with pytest.raises(TrainingConfigError) as excinfo:
        TrainingConfig.from_dict({"nonsense": 1, "lora_rank": 8})
    assert [name for name, _ in excinfo.value.errors] == ["lora_rank", "nonsense"]


def test_valid_values_pass():
    good = {
        "base_model": "/models/qwen",
        "method": "lora",
        "epochs": 0.5,
        "learning_rate": 1e-3,
        "lr_scheduler": "constant",
        "max_samples": 100,
        "gradient_checkpointing": True,
        "optim": "adamw_torch",
        "device": "cuda:0",
        "eval_steps": 5,
    }
    assert validate_hyperparameters(good) == []
    assert TrainingConfig.from_dict(good).device == "cuda:0"


def test_package_import_does_not_import_torch():
    code = (
        "import sys, workers.training, service.training.config; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
