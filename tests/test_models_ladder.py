"""Every ladder size trains: a forward + backward pass on CPU gives a finite loss and real gradients."""

from __future__ import annotations

import pytest
import torch

from clipscale.models import LADDER, create_model, get_tokenizer, image_size

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
