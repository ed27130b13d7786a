"""Supervised fine-tuning of a loadable model on task conversations (issue 26, item 1).

``finetune(model_source, FinetuneConfig)`` trains (LoRA adapters merged at the end, or every
weight) on conversations built by the replay's ``build_conversation``, the loss on each
round's target answer, and writes a folder that ``load_model(PATH)`` loads.
"""

from interp.finetune.config import FinetuneConfig, FinetuneResult
from interp.finetune.train import finetune

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]
