"""Models: one registry over the tiny ladder and open_clip's zoo, tokenizers, checkpoints, FLOPs.

`import clipscale.models` imports torch but not open_clip; open_clip is imported on first use.
"""

from clipscale.models.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    write_open_clip_config,
)
from clipscale.models.ladder import LADDER, ladder_config
from clipscale.models.registry import (
    context_length,
    create_model,
    get_tokenizer,
    image_size,
    is_ladder,
    list_models,
    model_config,
)
from clipscale.models.tokenizer import Tokenizer, WordTokenizer, tokenizer_from_state

__all__ = [
    "LADDER",
    "LoadedCheckpoint",
    "Tokenizer",
    "WordTokenizer",
    "context_length",
    "create_model",
    "get_tokenizer",
    "image_size",
    "is_ladder",
    "ladder_config",
    "list_models",
    "load_checkpoint",
    "model_config",
    "read_checkpoint",
    "save_checkpoint",
    "tokenizer_from_state",
    "write_open_clip_config",
]
