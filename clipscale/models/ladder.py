"""The tiny ladder: open_clip CLIP configs small enough to train on a laptop CPU.

Same structure as the paper's ViTs (ViT image tower, causal transformer text tower, width/64...
heads of width 32), scaled down so that a grid of runs fits in minutes on 2 cores. Sizes come from
../shared/design/tiny-scale-findings.md; GMACs span > 30x from tiny-S0 to tiny-S4. Text towers use
the synthetic data's word vocabulary and a 32-token context, recorded in every checkpoint.

Each size has a BPE twin, `tiny-S<i>-bpe`: the same towers with open_clip's BPE tokenizer
(SimpleTokenizer, 49408 tokens) at the same 32-token context, for real captions. Its checkpoints are
tokenized by plain open_clip (`open_clip.get_tokenizer` reads the context length from the config).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from clipscale.data.synth.vocab import VOCABULARY

IMAGE_SIZE = 32
CONTEXT_LENGTH = 32
HEAD_WIDTH = 32
BPE_SUFFIX = "-bpe"
BPE_VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer (bpe_simple_vocab_16e6)


@dataclass(frozen=True)
class Rung:
    """One ladder size: vision width/layers/patch, text width/layers, shared embedding dim."""

    vision_width: int
    vision_layers: int
    patch_size: int
    text_width: int
    text_layers: int
    embed_dim: int
    lr: float  # a learning rate that worked at batch 128 (findings doc); studies may override
    bpe: bool = False  # open_clip's BPE tokenizer (vocabulary 49408) instead of the synthetic words


WORD_LADDER: dict[str, Rung] = {
    "tiny-S0": Rung(32, 1, 8, 32, 1, 32, lr=3e-3),
    "tiny-S1": Rung(64, 2, 8, 64, 2, 64, lr=2e-3),
    "tiny-S2": Rung(96, 3, 8, 96, 2, 96, lr=1e-3),
    "tiny-S3": Rung(128, 4, 8, 128, 3, 128, lr=1e-3),
    "tiny-S4": Rung(192, 4, 4, 192, 3, 192, lr=7e-4),
}

# Suggested learning rates of the BPE twins at batch 128, the one place they live. Measured on the real
# emoji data (all three styles, augment "openclip", 10,240 samples; lr x0.5 / x1 / x2; BENCHMARKS.md
# "Real data"): S0 3e-3 (1.5e-3 and 6e-3 worse), S1 2e-3 (1e-3, 4e-3 worse), S2 1e-3 (2e-3 equal within
# noise, 5e-4 worse) on held-out retrieval and training loss. S3/S4 keep the word ladder's, unmeasured.
BPE_LRS: dict[str, float] = {
    "tiny-S0-bpe": 3e-3,
    "tiny-S1-bpe": 2e-3,
    "tiny-S2-bpe": 1e-3,
    "tiny-S3-bpe": 1e-3,
    "tiny-S4-bpe": 7e-4,
}

# Every built-in size: the word ladder (smallest to largest), then its BPE twins in the same order.
LADDER: dict[str, Rung] = {
    **WORD_LADDER,
    **{f"{name}{BPE_SUFFIX}": replace(rung, lr=BPE_LRS[f"{name}{BPE_SUFFIX}"], bpe=True)
       for name, rung in WORD_LADDER.items()},
}


def ladder_config(name: str) -> dict[str, Any]:
    """open_clip model config (the JSON open_clip's model_configs/ hold) for a ladder size."""
    rung = LADDER[name]
    cfg = {
        "embed_dim": rung.embed_dim,
        "vision_cfg": {
            "image_size": IMAGE_SIZE,
            "layers": rung.vision_layers,
            "width": rung.vision_width,
            "patch_size": rung.patch_size,
            "head_width": HEAD_WIDTH,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "vocab_size": BPE_VOCAB_SIZE if rung.bpe else len(VOCABULARY),
            "width": rung.text_width,
            "heads": max(1, rung.text_width // HEAD_WIDTH),
            "layers": rung.text_layers,
        },
    }
    return copy.deepcopy(cfg)
