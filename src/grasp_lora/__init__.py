"""grasp-lora: GRPO-guided adapter sparsity for cross-lingual LoRA transfer (arXiv 2601.06702)."""

__version__ = "0.1.0"
