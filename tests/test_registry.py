"""Method groups and name resolution for ``--methods``, and how many runs train at once."""

from __future__ import annotations

import pytest
import torch

from mmbench.benchmark.runtime import available_cores, resolve_jobs
from mmbench.errors import ConfigError
from mmbench.families import FAMILIES
from mmbench.methods import list_methods, method_group, method_info, resolve_methods


def test_all_is_every_method_but_ablation_variants() -> None:
    everything = list_methods()
    members = method_group("all")
    assert members == [
        n for n in everything if not {"ablation", "bound"} & set(method_info(n).tags)
    ]
    assert {"zerofill", "dropout-unet", "adamm", "mmgan", "shaspec", "retrieval-knn"} <= set(
        members
    )
    assert {"rfnet", "uhved", "smunet"} <= set(members)
    assert not {"adamm-no-garm", "adamm-no-bbdm", "adamm-no-lgrm"} & set(members)
    families = {method_info(n).family for n in members}
    assert families == set(FAMILIES)  # every family, the reference bounds included


def test_ablations_group_holds_adamm_and_its_variants() -> None:
    assert method_group("ablations") == [
        "adamm",
        "adamm-no-garm",
        "adamm-no-bbdm",
        "adamm-no-lgrm",
    ]


def test_resolve_mixes_names_and_groups_without_repeats() -> None:
    names = resolve_methods("all,ablations,bounds")
    assert names == method_group("all") + [
        n
        for n in method_group("ablations") + method_group("bounds")
        if n not in method_group("all")
    ]
    assert sorted(names) == sorted(list_methods())
    assert resolve_methods(["rfnet", "zerofill", "rfnet"]) == ["rfnet", "zerofill"]
    assert resolve_methods(" zerofill , dropout-unet ") == ["zerofill", "dropout-unet"]


@pytest.mark.parametrize("bad", ["nope", "zerofill,nope", ""])
def test_resolve_rejects_unknown_names_listing_methods_and_groups(bad: str) -> None:
    with pytest.raises(ValueError, match="zerofill") as err:
        resolve_methods(bad)
    if bad:
        assert "ablations" in str(err.value)


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="ablations"):
        method_group("everything")


def test_resolve_jobs() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_jobs("auto", 9, cpu) == min(9, available_cores())
    assert resolve_jobs(None, 1, cpu) == 1
    assert resolve_jobs("auto", 9, gpu) == 1
    assert resolve_jobs(3, 9, gpu) == 3
    assert resolve_jobs("2", 9, cpu) == 2
    for bad in (0, -1, "many"):
        with pytest.raises(ConfigError, match="jobs"):
            resolve_jobs(bad, 9, cpu)
