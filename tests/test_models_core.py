"""Model registry, word tokenizer and checkpoint round-trips (plain open_clip included)."""

import pytest
import torch

from clipscale.data.synth.vocab import VOCABULARY
from clipscale.errors import ClipscaleError
from clipscale.models import (
    LADDER,
    create_model,
    get_tokenizer,
    list_models,
    load_checkpoint,
    model_config,
    save_checkpoint,
    write_open_clip_config,
)
from clipscale.models.registry import _open_clip_names


def test_ladder_listed_first_and_open_clip_names_present():
    names = list_models()
    assert names[: len(LADDER)] == list(LADDER)
    assert "ViT-B-32" in names and "ViT-H-14" in names


def test_unknown_model_error_suggests_the_closest_names_not_all():
    """A typo names the model meant (look-alikes O/0 equal, a transposition first) and points at
    `clipscale models`, instead of a line of ~150 names."""
    for typo, meant in (("tiny-SO", "tiny-S0"), ("ViT-H-41", "ViT-H-14"), ("vit-b-32", "ViT-B-32"),
                        ("tiny-S1-bep", "tiny-S1-bpe")):
        with pytest.raises(ClipscaleError) as info:
            create_model(typo)
        text = str(info.value)
        assert text.startswith(f"unknown model {typo!r}; did you mean {meant}"), text
        assert f"(`clipscale models` lists all {len(list_models())}; a custom architecture: --model-config " \
               "FILE.json)" in text and len(text) < 250, text
    with pytest.raises(ClipscaleError) as info:
        create_model("zzzzzz")
    assert "did you mean" not in str(info.value)


def test_word_tokenizer_pads_truncates_and_puts_eot_at_argmax():
    tok = get_tokenizer("tiny-S0")
    ids = tok(["A red circle, above a blue square!", "zebra " * 100])
    assert ids.shape == (2, tok.context_length)
    eot = len(VOCABULARY) - 1
    # open_clip pools text features at argmax(id): that must be the <eot> position
    assert ids[0, ids[0].argmax()] == eot and ids[1, -1] == eot
    assert ids[0, 0] == VOCABULARY.index("<sot>")
    assert ids[0, 1] == VOCABULARY.index("a") and ids[0, 2] == VOCABULARY.index("red")
    assert (ids[1, 1:-1] == VOCABULARY.index("<unk>")).all()
    assert ids[0, 8] == eot and (ids[0, 9:] == 0).all()


def test_checkpoint_roundtrip_and_plain_open_clip_load(tmp_path):
    import open_clip

    torch.manual_seed(0)
    name = "tiny-S0"
    model, tok = create_model(name), get_tokenizer(name)
    ckpt = save_checkpoint(
        tmp_path / "c.pt", model=model, model_name=name, model_config=model_config(name),
        tokenizer=tok, step=3, samples_seen=384, compute=1.5, gmacs=0.004,
    )
    loaded = load_checkpoint(ckpt)
    assert (loaded.model_name, loaded.samples_seen, loaded.compute) == (name, 384, 1.5)
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.tokenizer("two stars").tolist() == tok("two stars").tolist()
    # plain open_clip, given the exported config, loads the same weights with weights_only=True
    open_clip.add_model_config(write_open_clip_config(tmp_path, name, model_config(name)))
    plain, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(ckpt))
    assert torch.equal(plain.visual.conv1.weight, model.visual.conv1.weight)
    _open_clip_names.cache_clear()  # open_clip now knows tiny-S0 too: still listed once
    names = list_models()
    assert len(names) == len(set(names)) and names[0] == name
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ClipscaleError, match=r"bad\.pt: not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(ClipscaleError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
