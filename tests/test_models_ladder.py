"""Every ladder size and its BPE twin trains: a forward + backward pass on CPU gives a finite loss and real
gradients; BPE twins tokenize with open_clip's BPE at context 32, and plain open_clip rebuilds that
tokenizer."""

from __future__ import annotations

import pytest
import torch

from clipscale.models import LADDER, create_model, get_tokenizer, image_size
from clipscale.models.ladder import BPE_LRS, WORD_LADDER

CAPTIONS = [
    "a red circle above a blue square",
    "two small green triangles on the left",
    "a large striped star in the center",
    "three yellow hearts next to a purple ring",
]


@pytest.mark.parametrize("name", list(LADDER))
def test_ladder_forward_backward(name: str) -> None:
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    model = create_model(name)
    tokenizer = get_tokenizer(name)
    size = image_size(name)
    images = torch.randn(len(CAPTIONS), 3, size, size)
    texts = tokenizer(CAPTIONS)
    assert texts.shape == (len(CAPTIONS), model.positional_embedding.shape[0])

    image_features, text_features, logit_scale = model(images, texts)
    embed_dim = model.text_projection.shape[1]
    assert image_features.shape == text_features.shape == (len(CAPTIONS), embed_dim)
    # open_clip returns L2-normalised features: the contrastive logits are cosine similarities
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)
    loss = ClipLoss()(image_features, text_features, logit_scale)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()

    for tower, module in (("image", model.visual), ("text", model.transformer)):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), tower
        assert sum(g.abs().sum().item() for g in grads) > 0, f"{name}: {tower} tower got zero gradients"
    assert model.token_embedding.weight.grad is not None
    assert model.token_embedding.weight.grad.abs().sum() > 0


def test_every_word_size_has_a_bpe_twin_with_the_same_towers_and_an_lr() -> None:
    from clipscale.models import ladder_config, list_models

    for name in WORD_LADDER:
        twin = f"{name}-bpe"
        assert twin in list_models() and LADDER[twin].lr == BPE_LRS[twin] > 0
        word, bpe = ladder_config(name), ladder_config(twin)
        assert bpe["text_cfg"].pop("vocab_size") == 49408 and bpe["text_cfg"]["context_length"] == 32
        word["text_cfg"].pop("vocab_size")
        assert word == bpe


def test_bpe_twin_tokenizer_is_open_clips_and_plain_open_clip_rebuilds_it(tmp_path) -> None:
    """A BPE twin's checkpoint is tokenized by plain open_clip from its written config (no clipscale)."""
    import open_clip

    from clipscale.models import model_config, write_open_clip_config

    name = "tiny-S1-bpe"
    tokens = get_tokenizer(name)(CAPTIONS)
    assert tokens.shape == (len(CAPTIONS), 32)
    assert torch.equal(tokens, open_clip.tokenizer.SimpleTokenizer(context_length=32)(CAPTIONS))
    open_clip.add_model_config(write_open_clip_config(tmp_path, name, model_config(name)))
    assert torch.equal(open_clip.get_tokenizer(name)(CAPTIONS), tokens)


def test_bpe_twin_tokenizer_without_open_clips_not_found_warning(caplog: pytest.LogCaptureFixture) -> None:
    """open_clip warns "Model configuration not found" for a name it does not know; the ladder's BPE twins
    (from their config, and from a checkpoint's saved state) get the same tokenizer without that noise."""
    import logging

    from clipscale.models import model_config
    from clipscale.models.tokenizer import tokenizer_from_state

    name = "tiny-S2-bpe"
    with caplog.at_level(logging.WARNING):
        tok = get_tokenizer(name)
        again = tokenizer_from_state(tok.state(), model_config=model_config(name))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert tok.state() == {"kind": "open_clip", "model": name, "context_length": 32}
    assert torch.equal(again(CAPTIONS), tok(CAPTIONS))
