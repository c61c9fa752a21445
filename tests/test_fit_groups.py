"""One group-name scheme (`clipscale.fit.groups`): full names, numbers and unambiguous tails select a
fit; an ambiguous or unknown name is a one-line error listing the candidates, never a silent pick."""

from __future__ import annotations

import pytest

from clipscale.errors import ClipscaleError
from clipscale.fit.groups import find_group, group_label, study_group

STUDY = [study_group(dataset=d, metric=m, distribution=x, law=law)
         for d, m in (("synth_retrieval", "image_retrieval_recall@5"), ("synth_color", "acc1"))
         for law in ("frontier", "power") for x in ("uniform", "zipf")]


def test_a_study_group_names_dataset_metric_distribution_and_law() -> None:
    assert STUDY[0] == "synth_retrieval/image_retrieval_recall@5/uniform/frontier"
    assert len(set(STUDY)) == len(STUDY)


def test_full_names_and_unambiguous_tails_select_one_fit() -> None:
    assert find_group(STUDY, STUDY[5], where="fits.json") == 5
    assert find_group(STUDY, "image_retrieval_recall@5/zipf/power", where="fits.json") == 3
    assert find_group(STUDY, "acc1/uniform/frontier", where="fits.json") == 4


def test_an_ambiguous_tail_lists_its_matches() -> None:
    with pytest.raises(ClipscaleError, match=r"fits.json: --group 'uniform/frontier' matches 2 groups "
                                             r"\(synth_retrieval/.*/uniform/frontier, synth_color/acc1/"):
        find_group(STUDY, "uniform/frontier", where="fits.json")


def test_a_tail_matches_whole_parts_only() -> None:
    with pytest.raises(ClipscaleError, match="no group 'form/frontier'; groups are: synth_retrieval/"):
        find_group(STUDY, "form/frontier", where="fits.json")


def test_fit_by_groups_values_numbers_and_several_columns() -> None:
    groups = ["laion", 4.0, ["uniform", "tiny-S0"], ["uniform", "tiny-S1"]]
    assert [group_label(g) for g in groups] == ["laion", "4.0", "uniform/tiny-S0", "uniform/tiny-S1"]
    assert find_group(groups, "4", where="f") == 1  # a number matches its text
    assert find_group(groups, "uniform/tiny-S1", where="f") == 3
    assert find_group(groups, "tiny-S0", where="f") == 2  # a tail of a several-column name
    with pytest.raises(ClipscaleError, match="matches 2 groups"):
        find_group(["a/uniform", "b/uniform"], "uniform", where="f")


def test_an_exact_name_wins_over_a_longer_name_it_is_the_tail_of() -> None:
    assert find_group(["uniform", "other/uniform"], "uniform", where="f") == 0
