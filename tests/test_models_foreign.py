"""Foreign sources, each written by the library that writes it, at tiny size: open_clip_train's checkpoint
layout and params.txt, open_clip's hf-hub export (save_for_hf), bare and OpenAI-layout state dicts.
Each must evaluate to exactly the metrics of the same weights saved as a clipscale checkpoint. Also:
weights-only refusals (malicious pickle, TorchScript), bad metadata, and the BPE context length."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from clipscale.cli import main
from clipscale.errors import ClipscaleError

BPE_NAME = "tiny-test-bpe"  # not a built-in name: a custom config registered from its JSON
BPE_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_bpe_config(directory: Path) -> Path:
    path = directory / f"{BPE_NAME}.json"
    path.write_text(json.dumps(BPE_CONFIG))
    return path


def tiny_suite(eval_sets: Path, directory: Path) -> Path:
    """Two of the synthetic sets (classification + retrieval): enough to compare metrics, fast."""
    path = directory / "suite.toml"
    path.write_text(f"""name = "tiny"
[[dataset]]
name = "synth_shape"
format = "synth"
path = "{eval_sets / 'synth_shape'}"
task = "zeroshot_classification"
[[dataset]]
name = "synth_retrieval"
format = "synth"
path = "{eval_sets / 'synth_retrieval'}"
task = "zeroshot_retrieval"
""")
    return path


def save_as_clipscale(path: Path, model: torch.nn.Module, name: str, cfg: dict[str, Any],
                      samples_seen: int = 640) -> Path:
    from clipscale.models import count_flops, get_tokenizer, save_checkpoint

    gmacs = count_flops(name).gmacs
    return save_checkpoint(path, model=model, model_name=name, model_config=cfg,
                           tokenizer=get_tokenizer(name), step=1, samples_seen=samples_seen,
                           compute=gmacs * samples_seen, gmacs=gmacs)


def write_open_clip_train_run(logs: Path, name: str, model: torch.nn.Module, *, epochs: int = 2,
                              train_num_samples: int | None = 320, world_size: int = 2) -> Path:
    """logs/NAME/params.txt as open_clip_train's main() writes it (its own argument parser) and
    checkpoints/epoch_N.pt with its dict layout: DDP's "module." prefix, AdamW state."""
    from open_clip_train.params import parse_args

    argv = ["--model", BPE_NAME, "--train-data", "shards/{000..009}.tar", "--batch-size", "32",
            "--epochs", str(epochs), "--name", name, "--logs", str(logs)]
    if train_num_samples is not None:
        argv += ["--train-num-samples", str(train_num_samples)]
    args = parse_args(argv)
    args.world_size = world_size
    run = logs / name
    (run / "checkpoints").mkdir(parents=True)
    with open(run / "params.txt", "w") as f:  # main.py: one "name: value" line per sorted argument
        for key in sorted(vars(args)):
            f.write(f"{key}: {getattr(args, key)}\n")
    optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=0.0)  # lr 0: weights unchanged
    for epoch in range(1, epochs + 1):
        for _ in range(3):  # three optimizer steps per epoch
            model.zero_grad()
            model.logit_scale.sum().backward()
            optimizer.step()
        checkpoint = {"epoch": epoch, "name": name,
                      "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                      "optimizer": optimizer.state_dict()}
        torch.save(checkpoint, run / "checkpoints" / f"epoch_{epoch}.pt")
    torch.save(checkpoint, run / "checkpoints" / "epoch_latest.pt")
    return run


class _NoTokenizerFiles:
    """save_for_hf also calls tokenizer.save_pretrained; open_clip's BPE tokenizer has no files to save
    (push_to_hf_hub would download an HF tokenizer instead; tests have no network)."""

    def save_pretrained(self, dest: str) -> None:
        pass


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory, synth_eval_sets: Path) -> dict[str, Any]:
    """A tiny BPE model registered from its JSON, its clipscale checkpoint, and a small suite."""
    import open_clip

    from clipscale.models.registry import register_model_config

    d = tmp_path_factory.mktemp("bpe")
    config = write_bpe_config(d)
    assert register_model_config(config) == [BPE_NAME]
    torch.manual_seed(0)
    model = open_clip.create_model(BPE_NAME)
    ckpt = save_as_clipscale(d / "samples_000000000640.pt", model, BPE_NAME, BPE_CONFIG)
    return {"dir": d, "config": config, "model": model, "ckpt": ckpt, "suite": tiny_suite(synth_eval_sets, d)}


def _metrics(records: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, float]]]:
    return [(r["dataset"], r["task"], r["metrics"]) for r in records]


def _eval(source: Any, suite: Path, **kw: Any) -> list[dict[str, Any]]:
    from clipscale.evals import evaluate_checkpoint

    return evaluate_checkpoint(source, suite=suite, batch_size=100, **kw)


def test_open_clip_train_checkpoint_equals_clipscale_checkpoint(bpe: dict[str, Any], tmp_path: Path) -> None:
    from clipscale.evals import evaluate_run
    from clipscale.models import count_flops

    run = write_open_clip_train_run(tmp_path / "logs", "run-a", bpe["model"])
    reference = _eval(bpe["ckpt"], bpe["suite"])
    records = _eval(run / "checkpoints" / "epoch_2.pt", bpe["suite"])
    assert _metrics(records) == _metrics(reference)
    gmacs = count_flops(BPE_NAME).gmacs
    for r in records:  # model name and samples seen from params.txt: train_num_samples x epoch
        assert (r["model"], r["source_format"], r["samples_seen"]) == (BPE_NAME, "open_clip_train", 640)
        assert r["gmacs"] == gmacs and r["compute"] == pytest.approx(gmacs * 640)
    before = sorted(p.name for p in run.rglob("*"))
    by_run = evaluate_run(run, suite=bpe["suite"], batch_size=100)  # every epoch_N.pt, not epoch_latest
    assert [r["samples_seen"] for r in by_run] == [320, 320, 640, 640]
    assert [r["checkpoint"] for r in by_run][::2] == ["checkpoints/epoch_1.pt", "checkpoints/epoch_2.pt"]
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written into open_clip_train's folder


def test_open_clip_train_samples_from_steps_or_unknown(bpe: dict[str, Any], tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from clipscale.models.foreign import load_source

    run = write_open_clip_train_run(tmp_path / "logs", "csv-run", bpe["model"], train_num_samples=None)
    loaded = load_source(run / "checkpoints" / "epoch_2.pt")
    assert loaded.samples_seen == 6 * 32 * 2  # 6 AdamW steps x batch 32 per GPU x world size 2
    (run / "params.txt").unlink()
    with pytest.raises(ClipscaleError, match=r"no params\.txt.*--model"):
        load_source(run / "checkpoints" / "epoch_2.pt")
    bare = load_source(run / "checkpoints" / "epoch_2.pt", model=BPE_NAME)
    assert bare.samples_seen is None and bare.compute is None  # unknown, not guessed
    assert "samples seen unknown" in caplog.text


def test_hf_hub_folder_and_local_dir(bpe: dict[str, Any], tmp_path: Path) -> None:
    from open_clip.push_to_hf_hub import save_for_hf

    both, bin_only = tmp_path / "export", tmp_path / "bin-only"
    save_for_hf(bpe["model"], _NoTokenizerFiles(), BPE_CONFIG, both)  # .safetensors and .bin
    save_for_hf(bpe["model"], _NoTokenizerFiles(), BPE_CONFIG, bin_only, safe_serialization=False)
    assert {p.name for p in both.iterdir()} >= {"open_clip_config.json", "open_clip_model.safetensors"}
    reference = _metrics(_eval(bpe["ckpt"], bpe["suite"]))
    for source in (both, f"local-dir:{both}", bin_only):
        records = _eval(source, bpe["suite"])
        assert _metrics(records) == reference
        assert records[0]["model"] == BPE_NAME and records[0]["source_format"] == "hf_hub"
        assert records[0]["samples_seen"] is None and records[0]["compute"] is None
    records = _eval(both, bpe["suite"], samples_seen=1000)
    assert records[0]["compute"] == pytest.approx(1000 * records[0]["gmacs"])


def test_cli_bare_state_dicts_need_model(bpe: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    state = bpe["model"].state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.bin")
    reference = _metrics(_eval(bpe["ckpt"], bpe["suite"]))
    for name in ("w.safetensors", "w.bin"):
        out = tmp_path / f"{name}.jsonl"
        code = main(["eval", str(tmp_path / name), "--suite", str(bpe["suite"]), "--model", BPE_NAME,
                     "--model-config", str(bpe["config"]), "--samples-seen", "64", "--out", str(out)])
        assert code == 0
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert _metrics(records) == reference
        assert {(r["source_format"], r["samples_seen"]) for r in records} == {("state_dict", 64)}
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "w.bin"), "--suite", str(bpe["suite"])]) == 2
    err = capsys.readouterr().err
    assert "w.bin: a bare state dict does not name its architecture; pass --model" in err
    assert err.count("\n") == 1


def test_openai_layout_state_dict(bpe: dict[str, Any], tmp_path: Path) -> None:
    """OpenAI's layout: fp16 weights, QuickGELU, 64-wide heads and its three scalar entries; open_clip's
    build_model_from_openai_state_dict infers the architecture."""
    from open_clip.model import CLIP, convert_weights_to_fp16

    from clipscale.models import count_flops

    torch.manual_seed(1)
    model = CLIP(64, vision_cfg={"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
                 text_cfg={"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
                 quick_gelu=True)
    convert_weights_to_fp16(model)
    state = dict(model.state_dict())
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(32),
                 vocab_size=torch.tensor(49408))
    torch.save(state, tmp_path / "tiny-openai.pt")
    records = _eval(tmp_path / "tiny-openai.pt", bpe["suite"])
    name = records[0]["model"]
    assert name == "openai-tiny-openai" and records[0]["source_format"] == "openai"
    assert records[0]["gmacs"] == count_flops(name).gmacs
    from clipscale.models import model_config

    ref = save_as_clipscale(tmp_path / "ref.pt", model.float(), name, model_config(name))
    assert _metrics(records) == _metrics(_eval(ref, bpe["suite"]))


class _Evil:
    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(_Evil.marker),))

    marker = ""


def test_malicious_pickle_and_torchscript_refused_in_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10 item 6: one line, "refused: not a weights-only checkpoint", never weights_only=False."""
    _Evil.marker = str(tmp_path / "PWNED")
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    torch.save({"state_dict": _Evil(), "clipscale": {}}, tmp_path / "evil2.pt")
    script = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(script))
    for path, expected in ((tmp_path / "evil2.pt", "refused: not a weights-only checkpoint"),
                           (script, "refused: a TorchScript archive")):
        assert main(["eval", str(path), "--suite", "synth", "--data-root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"clipscale: error: {path}: {expected}") and err.count("\n") == 1
        assert "weights_only" not in err and "Traceback" not in err
    from clipscale.models import load_checkpoint

    with pytest.raises(ClipscaleError) as info:
        load_checkpoint(evil)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(("change", "key"), [
    (lambda m: m.pop("samples_seen"), "clipscale.samples_seen"),
    (lambda m: m.update(step="3"), "clipscale.step"),
    (lambda m: m.update(model_config=[1]), "clipscale.model_config"),
    (lambda m: m["model_config"].pop("vision_cfg"), "clipscale.model_config.vision_cfg"),
    (lambda m: m.update(tokenizer={"vocab": []}), "clipscale.tokenizer.kind"),
    (lambda m: m["model_config"]["vision_cfg"].update(width="wide"), "clipscale.model_config"),
])
def test_bad_metadata_is_one_line_naming_file_and_key(tmp_path: Path, change: Any, key: str,
                                                      synth_eval_sets: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10 item 6: missing or ill-typed `clipscale` keys gave KeyError/TypeError tracebacks."""
    from tests.test_evals_runner import save_tiny

    path = save_tiny(tmp_path / "c.pt")
    payload = torch.load(path, weights_only=True)
    change(payload["clipscale"])
    torch.save(payload, path)
    assert main(["eval", str(path), "--suite", "synth", "--data-root", str(synth_eval_sets)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"clipscale: error: {path}: ") and f"'{key}" in err and err.count("\n") == 1


def test_bpe_checkpoint_keeps_its_context_length(tmp_path: Path) -> None:
    """A BPE model unknown to this process (as in a fresh `clipscale eval`): open_clip's tokenizer fell
    back to 77 tokens and the text tower (32 positions) crashed on long captions."""
    from types import SimpleNamespace

    from clipscale.evals.embed import Embedder
    from clipscale.models import load_checkpoint, save_checkpoint
    from clipscale.models.registry import build_from_config, list_models

    name = "tiny-bpe-unregistered"
    assert name not in list_models()
    torch.manual_seed(0)
    model = build_from_config(name, BPE_CONFIG)
    # what training (where the config was registered) saved: open_clip's BPE at 32 tokens
    tok = SimpleNamespace(state=lambda: {"kind": "open_clip", "model": name, "context_length": 32})
    path = save_checkpoint(tmp_path / "c.pt", model=model, model_name=name, model_config=BPE_CONFIG,
                           tokenizer=tok, step=1, samples_seen=1, compute=1.0, gmacs=1.0)
    loaded = load_checkpoint(path)
    assert loaded.tokenizer.context_length == 32
    long = "a red circle above a blue square next to " * 10
    bundle = Embedder(loaded.model, loaded.tokenizer, checkpoint_hash="x", model_config=BPE_CONFIG)
    assert bundle.text_features([long, "a cat"]).shape == (2, 64)


def test_model_config_registers_for_flops_and_models(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny-flops-bpe.json"
    config.write_text(json.dumps(BPE_CONFIG))
    assert main(["flops", "tiny-flops-bpe", "--json"]) == 2
    assert "--model-config FILE.json" in capsys.readouterr().err
    assert main(["flops", "tiny-flops-bpe", "--json", "--model-config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context_length"] == 32 and report["gmacs"] > 0
    assert main(["models", "--json", "--model-config", str(config)]) == 0
    assert "tiny-flops-bpe" in {r["model"] for r in json.loads(capsys.readouterr().out)}
    bad = tmp_path / "bad.json"
    bad.write_text('{"embed_dim": 8}')
    assert main(["flops", "bad", "--model-config", str(bad)]) == 2
    assert "bad.json: an open_clip model config needs" in capsys.readouterr().err


def test_train_with_model_config_then_eval(tmp_path: Path, synth_train_shards: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`clipscale train --model-config FILE.json` trains a custom BPE architecture; the checkpoint records
    the architecture and the tokenizer's 32-token context (what eval rebuilds from)."""
    config = tmp_path / "tiny-train-bpe.json"
    config.write_text(json.dumps(BPE_CONFIG))
    out = tmp_path / "run"
    code = main(["train", "--model", "tiny-train-bpe", "--model-config", str(config), "--train-data",
                 str(synth_train_shards), "--samples-seen", "64", "--batch-size", "32",
                 "--output-dir", str(out), "--workers", "0", "--progress", "false",
                 "--checkpoint-points", "1.0"])
    assert code == 0, capsys.readouterr().err
    (ckpt,) = (out / "checkpoints").glob("samples_*.pt")
    meta = torch.load(ckpt, weights_only=True)["clipscale"]
    assert meta["tokenizer"] == {"kind": "open_clip", "model": "tiny-train-bpe", "context_length": 32}
    assert json.loads((out / "config.json").read_text())["model_configs"] == [str(config)]
    assert meta["model_config"] == BPE_CONFIG


def test_ladder_checkpoint_in_plain_open_clip_needs_clipscale_tokenizer(tmp_path: Path) -> None:
    """The documented caveat (ARCHITECTURE.md): plain open_clip loads a ladder checkpoint's weights, but
    its own (BPE) tokenizer's ids overflow the 127-word embedding; clipscale's tokenizer fits."""
    import open_clip

    from clipscale.models import model_config, tokenizer_from_state, write_open_clip_config
    from tests.test_evals_runner import save_tiny

    path = save_tiny(tmp_path / "c.pt")
    open_clip.add_model_config(write_open_clip_config(tmp_path, "tiny-S0", model_config("tiny-S0")))
    model, _, _ = open_clip.create_model_and_transforms("tiny-S0", pretrained=str(path))
    caption = "a red circle above a blue square"
    assert int(open_clip.get_tokenizer("tiny-S0")([caption]).max()) >= model.vocab_size
    tokens = tokenizer_from_state(torch.load(path, weights_only=True)["clipscale"]["tokenizer"])([caption])
    assert model.encode_text(tokens).shape == (1, 32)


def test_hf_folder_under_another_architectures_name_is_refused(bpe: dict[str, Any], tmp_path: Path) -> None:
    from open_clip.push_to_hf_hub import save_for_hf

    save_for_hf(bpe["model"], _NoTokenizerFiles(), BPE_CONFIG, tmp_path / "export")
    with pytest.raises(ClipscaleError, match="'ViT-B-32' is already registered with a different config"):
        _eval(tmp_path / "export", bpe["suite"], model="ViT-B-32")


def test_open_clip_train_force_quick_gelu_builds_what_it_trained(bpe: dict[str, Any], tmp_path: Path) -> None:
    from open_clip.transformer import QuickGELU

    from clipscale.models.foreign import load_source

    run = write_open_clip_train_run(tmp_path / "logs", "qg", bpe["model"], epochs=1)
    params = (run / "params.txt").read_text().replace("force_quick_gelu: False", "force_quick_gelu: True")
    (run / "params.txt").write_text(params)
    loaded = load_source(run / "checkpoints" / "epoch_1.pt")
    assert loaded.model_name == f"{BPE_NAME}-quickgelu" and loaded.meta["model_config"]["quick_gelu"]
    assert any(isinstance(m, QuickGELU) for m in loaded.model.modules())


def test_model_config_of_a_ladder_run_is_accepted_another_refused(tmp_path: Path) -> None:
    from clipscale.models import model_config, register_model_config, write_open_clip_config

    own = write_open_clip_config(tmp_path / "run", "tiny-S0", model_config("tiny-S0"))
    assert register_model_config(own) == ["tiny-S0"]
    (tmp_path / "tiny-S1.json").write_text(json.dumps(BPE_CONFIG))
    with pytest.raises(ClipscaleError, match="'tiny-S1' is a built-in ladder size"):
        register_model_config(tmp_path / "tiny-S1.json")


def test_hf_tokenizer_models_fail_in_one_line_without_transformers(
        tmp_path: Path, synth_train_shards: Path, synth_eval_sets: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """SigLIP's tokenizer is a Hugging Face one: without transformers (or its files offline), train and
    eval say which model needs which tokenizer and what to install, in one line (no traceback)."""
    import sys

    from clipscale.models import get_tokenizer, tokenizer_from_state
    from clipscale.models.registry import build_from_config

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails, as where it is not installed
    with pytest.raises(ClipscaleError, match="'ViT-B-16-SigLIP' uses the Hugging Face tokenizer "
                                             "'timm/ViT-B-16-SigLIP': install transformers") as err:
        get_tokenizer("ViT-B-16-SigLIP")
    assert "\n" not in str(err.value)
    with pytest.raises(ClipscaleError, match="HF_HUB_OFFLINE"):  # eval of a saved run rebuilds it so
        tokenizer_from_state({"kind": "open_clip", "model": "ViT-B-16-SigLIP", "context_length": 64})
    assert main(["train", "--model", "ViT-B-16-SigLIP", "--train-data", str(synth_train_shards),
                 "--output-dir", str(tmp_path / "run"), "--workers", "0", "--progress", "false"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("clipscale: error: model 'ViT-B-16-SigLIP' uses the Hugging Face tokenizer")
    assert err_text.count("\n") == 1 and not (tmp_path / "run").exists()
    # eval of a custom architecture with an HF tokenizer (a tiny SigLIP-like text config)
    cfg = {**BPE_CONFIG, "text_cfg": {**BPE_CONFIG["text_cfg"], "hf_tokenizer_name": "timm/tiny-hf-tok"}}
    config = tmp_path / "tiny-hf-tok.json"
    config.write_text(json.dumps(cfg))
    torch.save(build_from_config("tiny-hf-tok", cfg).state_dict(), tmp_path / "w.pt")
    assert main(["eval", str(tmp_path / "w.pt"), "--model", "tiny-hf-tok", "--model-config", str(config),
                 "--suite", "synth", "--data-root", str(synth_eval_sets), "--out", str(tmp_path / "r")]) == 2
    err_text = capsys.readouterr().err
    assert "model 'tiny-hf-tok' uses the Hugging Face tokenizer 'timm/tiny-hf-tok'" in err_text
    assert err_text.count("\n") == 1
