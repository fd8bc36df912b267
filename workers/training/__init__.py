"""Pure training code: dataset JSONL + base model + hyperparameters -> LoRA/QLoRA adapter.

Knows nothing of the database or HTTP; the Celery task adapts between them.

This package must stay importable without torch: only ``config`` is re-exported here,
everything that needs torch/transformers/peft is imported from its own module
(``workers.training.train``, ``.data``, ``.models``, ``.artifacts``, ...), and those modules
import the heavy libraries lazily where they can.
"""

from service.training.config import (
    TrainingConfig,
    TrainingConfigError,
    describe_fields,
    validate_hyperparameters,
)

__all__ = [
    "TrainingConfig",
    "TrainingConfigError",
    "describe_fields",
    "validate_hyperparameters",
]
