"""Study files: parsing, one-line validation errors, grid expansion and run-id stability."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipscale.errors import ClipscaleError
from clipscale.study.grid import plan
from clipscale.study.spec import load_study
from tests.study_fakes import fake_flops

BASE = """
[study]
name = "t"
output_dir = "out"

[datasets.uni]
synth = "uniform"
samples = 4000

[datasets.zipf]
synth = "zipf"
samples = 4000

[train]
batch_size = 64
warmup_fraction = 0.1
checkpoint_points = [0.5, 1.0]

[[rules]]
when = {model = "tiny-S1"}
set = {lr = 1e-3}

[[grid]]
model = ["tiny-S0", "tiny-S1"]
dataset = ["uni", "zipf"]
data_size = [4000]
compute = [5.0, 10.0]

[[grid]]
model = "tiny-S0"
dataset = "uni"
data_size = 500
samples_seen = 2000
"""


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _plan(tmp_path: Path, text: str, name: str = "study.toml"):
    return plan(load_study(_write(tmp_path, text, name)), flops=fake_flops)


def test_grid_expands_isoflop_groups_rules_and_blocks(tmp_path: Path) -> None:
    runs = _plan(tmp_path, BASE)
    assert len(runs) == 9  # 2 models x 2 datasets x 2 compute levels + 1 data-constrained run
    s0 = next(r for r in runs if r.model == "tiny-S0" and r.compute_group == 10.0 and r.dataset == "uni")
    s1 = next(r for r in runs if r.model == "tiny-S1" and r.compute_group == 10.0 and r.dataset == "uni")
    # compute-matched: samples = C / GMACs rounded to whole batches, so compute agrees within a batch
    assert s0.samples_seen % 64 == 0 and abs(s0.compute - 10.0) <= 64 * 0.0007
    assert abs(s1.compute - 10.0) <= 64 * 0.005 and s1.samples_seen < s0.samples_seen
    assert s1.train["lr"] == 1e-3  # rule
    assert s0.train["lr"] == 3e-3  # the ladder's lr for tiny-S0
    assert s0.train["warmup"] == round(0.1 * s0.samples_seen)
    constrained = next(r for r in runs if r.data_size == 500)
    assert constrained.samples_seen == 2048 and constrained.compute_group is None  # 2000: 32 whole batches
    assert all(r.run_dir == tmp_path / "out" / "runs" / r.run_id for r in runs)


def test_run_ids_ignore_order_and_operational_keys(tmp_path: Path) -> None:
    ids = {r.run_id for r in _plan(tmp_path, BASE)}
    reordered = BASE.replace('model = ["tiny-S0", "tiny-S1"]', 'model = ["tiny-S1", "tiny-S0"]').replace(
        'dataset = ["uni", "zipf"]', 'dataset = ["zipf", "uni"]').replace(
        "batch_size = 64\nwarmup_fraction = 0.1", "warmup_fraction = 0.1\nbatch_size = 64\nlog_every = 3")
    assert reordered != BASE
    assert {r.run_id for r in _plan(tmp_path, reordered, "b.toml")} == ids


def test_augment_is_in_the_run_id_keep_latest_and_augment_none_are_not(tmp_path: Path) -> None:
    """`augment = "none"` trains as before the key existed, so it keeps the ids; "openclip" changes the
    weights and every id; keep_latest is operational (not in the id) and reaches each run's config."""
    ids = [r.run_id for r in _plan(tmp_path, BASE)]
    same = BASE.replace("[train]\n", '[train]\naugment = "none"\nkeep_latest = true\n')
    runs = _plan(tmp_path, same, "b.toml")
    assert [r.run_id for r in runs] == ids and all(r.train["keep_latest"] is True for r in runs)
    crops = BASE.replace("[train]\n", '[train]\naugment = "openclip"\n')
    runs = _plan(tmp_path, crops, "c.toml")
    assert all(r.train["augment"] == "openclip" for r in runs)
    assert not {r.run_id for r in runs} & set(ids) and len({r.run_id for r in runs}) == len(ids)


def _key(r) -> tuple:
    return (r.model, r.dataset, r.data_size, r.compute_group)


def test_editing_one_cell_changes_only_its_id(tmp_path: Path) -> None:
    before = {_key(r): r.run_id for r in _plan(tmp_path, BASE)}
    edited = BASE.replace("data_size = 500\nsamples_seen = 2000", "data_size = 500\nsamples_seen = 3000")
    after = {_key(r): r.run_id for r in _plan(tmp_path, edited, "b.toml")}
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [("tiny-S0", "uni", 500, None)]
    # a rule that touches one model changes exactly that model's runs
    ruled = BASE.replace("set = {lr = 1e-3}", "set = {lr = 5e-4}")
    after = {_key(r): r.run_id for r in _plan(tmp_path, ruled, "c.toml")}
    assert {k[0] for k in before if before[k] != after[k]} == {"tiny-S1"}


@pytest.mark.parametrize(("edit", "message"), [
    (("[train]", "[train]\nbatchsize = 3"), "[train]: unknown key 'batchsize'; allowed: "),
    (("[[grid]]\nmodel = [", "[[grid]]\nmodels = ["),
     "[[grid]] #1: unknown key 'models'; allowed: model, dataset"),
    (('dataset = ["uni", "zipf"]', 'dataset = ["uni", "laion"]'),
     "unknown dataset 'laion'; defined: uni, zipf"),
    (("compute = [5.0, 10.0]", "compute = [5.0, -1.0]"),
     "[[grid]] #1 compute[1]: expected a positive number"),
    (("compute = [5.0, 10.0]", "compute = [5.0]\nsamples_seen = 9"),
     "set exactly one of 'samples_seen' or 'compute'"),
    (('synth = "zipf"\n', 'synth = "zipf"\nshards = "a.tar"\n'), "[datasets.zipf]: set exactly one of"),
    (("data_size = [4000]", "data_size = [5000]"), "data_size: 5000 > 4000 samples of dataset 'uni'"),
    (("[train]", "[train]\nseed = 3"), "unknown key 'seed'"),
    (("[train]", "[train]\nschedule = 'linear'"),
     "train config field 'schedule': expected one of cosine"),
    (("[train]", "[train]\naugment = 'flip'"),
     "train config field 'augment': expected one of none, openclip, got 'flip'"),
    (("[train]", "[train]\nkeep_latest = 'yes'"), "train config field 'keep_latest': expected bool"),
    (("[[rules]]", "[fit]\nn_column = 'N'\n\n[[rules]]"),
     "[fit] n_column: expected one of params_nonemb, params, got 'N'"),
    (("[[rules]]", "[fit]\nlaws = ['cubic']\n\n[[rules]]"),
     "[fit] laws[0]: unknown law 'cubic'; allowed: power, frontier, saturating"),
    (("[[rules]]", "[fit]\nfrontier = 'convex'\n\n[[rules]]"),
     "[fit] frontier: expected one of none, cherti, pareto, hull, got 'convex'"),
    (("[[rules]]", "[fit]\nobjective = 'l1'\n\n[[rules]]"),
     "[fit] objective: expected one of huber-log, squares-log, squares, got 'l1'"),
    (("[[rules]]", "[fit]\nconstrained = 'drop'\n\n[[rules]]"),
     "[fit] constrained: expected one of exclude, include, got 'drop'"),
    (("[[rules]]", "[fit]\nlaw = 'power'\n\n[[rules]]"), "[fit]: unknown key 'law'; allowed: metrics, laws"),
    (("[[rules]]", "[fit]\nbootstrap = -1\n\n[[rules]]"), "[fit] bootstrap: expected an integer >= 0"),
    (("[[rules]]", "[fit]\nfix = {E_inf = 'low'}\n\n[[rules]]"), "[fit] fix E_inf: expected a number"),
    (("[[rules]]", "[fit]\nlink = 'logit'\n\n[[rules]]"),
     "[fit] link: 'logit': expected auto, error, neglog, odds or boxcox:LAM"),
    (("[[rules]]", "[fit]\nlink = 0.5\n\n[[rules]]"), "[fit] link: expected a str, got 0.5"),
    (("when = {model", "when = {arch"), "[[rules]] #1 when: unknown key 'arch'; allowed: model"),
    (("[study]", "[stduy]"), "study file: unknown key 'stduy'; allowed: study, datasets"),
])
def test_invalid_study_gives_one_line_naming_the_key(tmp_path: Path, edit: tuple[str, str],
                                                     message: str) -> None:
    text = BASE.replace(*edit, 1)
    assert text != BASE
    with pytest.raises(ClipscaleError) as err:
        _plan(tmp_path, text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_fit_section_accepts_every_law_and_frontier(tmp_path: Path) -> None:
    from clipscale.fit.laws import list_laws

    laws = ", ".join(f"'{law}'" for law in list_laws())
    for i, frontier in enumerate(("none", "cherti", "pareto", "hull")):
        text = BASE.replace("[[rules]]", f"[fit]\nlaws = [{laws}]\nfrontier = '{frontier}'\n\n[[rules]]", 1)
        spec = load_study(_write(tmp_path, text, f"s{i}.toml"))
        assert spec.fit.laws == tuple(list_laws()) and spec.fit.frontier == frontier
        assert spec.fit.max_passes == 10  # data-constrained runs stay out of frontiers by default
        assert spec.fit.link == "error"
    text = BASE.replace("[[rules]]", "[fit]\nlink = 'boxcox:-0.5'\n\n[[rules]]", 1)
    assert load_study(_write(tmp_path, text, "link.toml")).fit.link == "boxcox:-0.5"


def test_study_file_is_data_only(tmp_path: Path) -> None:
    with pytest.raises(ClipscaleError, match="invalid TOML"):
        load_study(_write(tmp_path, "import os\nos.system('touch pwned')\n"))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ClipscaleError, match="not found"):
        load_study(tmp_path / "missing.toml")
    with pytest.raises(ClipscaleError, match="a directory; expected a study file"):
        load_study(tmp_path)
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ClipscaleError, match="not UTF-8 text; expected a study file"):
        load_study(tmp_path / "binary.toml")


def test_an_unknown_model_names_the_study_file_and_grid_block(tmp_path: Path) -> None:
    def registry_flops(model: str) -> tuple[float, float]:
        if model == "tiny-S9":  # what the model registry says of a name it does not hold
            raise ClipscaleError("unknown model 'tiny-S9'; valid models: tiny-S0, tiny-S1")
        return fake_flops(model)

    path = _write(tmp_path, BASE.replace('model = "tiny-S0"\n', 'model = ["tiny-S0", "tiny-S9"]\n'))
    with pytest.raises(ClipscaleError) as info:
        plan(load_study(path), flops=registry_flops)
    assert str(info.value) == (f"{path.resolve()}: [[grid]] #2 model: unknown model 'tiny-S9'; "
                               "valid models: tiny-S0, tiny-S1")


def test_an_unknown_model_in_a_study_suggests_the_name_and_the_studys_model_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's error in a study file: the file as the user names it (relative, like its other
    errors), the block and field, the closest name, and `model_configs` (no CLI flag in a study file)."""
    from clipscale.models.registry import model_config

    def registry_flops(model: str) -> tuple[float, float]:
        model_config(model)  # the registry's check of the name
        return fake_flops(model)

    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, BASE.replace('model = "tiny-S0"\n', 'model = ["tiny-S0", "tiny-SO"]\n'))
    with pytest.raises(ClipscaleError) as info:
        plan(load_study(path.name), flops=registry_flops)
    text = str(info.value)
    assert text.startswith("study.toml: [[grid]] #2 model: unknown model 'tiny-SO'; did you mean tiny-S0? "
                           "(`clipscale models` lists all"), text
    assert text.endswith('a custom architecture: model_configs = ["FILE.json"] in [study])'), text
    assert "--model-config" not in text
