"""Local-model evaluation (``[train]`` extra): batch generation with transformers (+ peft)."""
