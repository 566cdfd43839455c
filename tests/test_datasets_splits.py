"""Seeded, grouped, stratified splits and split files (no NIfTI needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbench.datasets import Case, Split, get_dataset, load_split, make_split


def fake_cases(dataset: str, ids: list[str], grades: list[str | None] | None = None) -> list[Case]:
    spec = get_dataset(dataset)
    grades = grades or [None] * len(ids)
    return [
        Case(
            id=i,
            images={m: Path(f"{i}_{m}.nii.gz") for m in ("T1", "T1ce", "T2", "FLAIR")},
            label=Path(f"{i}_seg.nii.gz"),
            group=spec.group_of(i),
            grade=g,
        )
        for i, g in zip(ids, grades)
    ]


def brats2024_cases(n_patients: int = 12) -> list[Case]:
    # Patients with 1, 2 or 3 time points.
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(n_patients) for t in range(1 + p % 3)]
    return fake_cases("brats2024", ids)


def parts(split: Split) -> dict[str, list[str]]:
    return {"train": split.train, "val": split.val, "test": split.test}


def test_no_patient_in_two_parts():
    cases = brats2024_cases()
    spec = get_dataset("brats2024")
    for seed in range(5):
        split = make_split(cases, spec, seed=seed)
        patients = {k: {spec.group_of(i) for i in v} for k, v in parts(split).items()}
        assert not patients["train"] & patients["val"]
        assert not patients["train"] & patients["test"]
        assert not patients["val"] & patients["test"]
        assert sorted(split.train + split.val + split.test) == sorted(c.id for c in cases)
        # 12 patients at (0.7, 0.1, 0.2): 8 / 1 / 2 ... rounded to 2 test and 1 val patients.
        assert len(patients["test"]) == 2 and len(patients["val"]) == 1


def test_seeded_reproducible_and_order_independent():
    cases = brats2024_cases()
    spec = get_dataset("brats2024")
    a = make_split(cases, spec, seed=3)
    assert a == make_split(list(reversed(cases)), spec, seed=3)
    assert any(make_split(cases, spec, seed=s) != a for s in (4, 5))
    assert a.train == sorted(a.train)


def test_grade_stratification():
    ids = [f"Brats18_H_{i}" for i in range(20)] + [f"Brats18_L_{i}" for i in range(10)]
    cases = fake_cases("brats2018", ids, ["HGG"] * 20 + ["LGG"] * 10)
    for seed in range(5):
        split = make_split(cases, "brats2018", fractions=(0.6, 0.2, 0.2), seed=seed)
        for part in (split.val, split.test):
            assert len(part) == 6
            assert sum("_L_" in i for i in part) == 2  # 1/3 LGG, as in the whole set
        assert sum("_L_" in i for i in split.train) == 6


def test_unknown_grade_is_its_own_stratum():
    ids = [f"Brats18_X_{i}" for i in range(10)]
    split = make_split(fake_cases("brats2018", ids), "brats2018", seed=0)
    assert len(split) == 10 and split.val and split.test


@pytest.mark.parametrize("n", [3, 4, 5])
def test_tiny_datasets_have_nonempty_parts(n):
    cases = fake_cases("pretreat-mets", [f"BraTS-MET-{i:05d}-000" for i in range(n)])
    for seed in range(4):
        split = make_split(cases, "pretreat-mets", seed=seed)
        assert split.train and split.val and split.test
        assert len(split) == n


def test_k_fold():
    cases = brats2024_cases()
    spec = get_dataset("brats2024")
    folds = [make_split(cases, spec, seed=1, k_folds=4, fold=k) for k in range(4)]
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == {c.id for c in cases}
    assert sum(len(t) for t in tests) == len(cases)  # the test folds partition the cases
    for f in folds:
        assert f.val and f.train and not set(f.val) & set(f.test)
        patients = [{spec.group_of(i) for i in p} for p in (f.train, f.val, f.test)]
        assert not (patients[0] & patients[1] or patients[0] & patients[2])
    assert folds[0] == make_split(cases, spec, seed=1, k_folds=4, fold=0)
    with pytest.raises(ValueError):
        make_split(cases, spec, k_folds=4, fold=4)
    with pytest.raises(ValueError, match="too few"):
        make_split(cases[:3], spec, k_folds=5)


def test_split_json_round_trip(tmp_path):
    split = make_split(brats2024_cases(), "brats2024", seed=0)
    path = split.to_json(tmp_path / "run" / "split.json")
    assert json.loads(path.read_text())["test"] == split.test
    assert Split.from_json(path) == split
    assert Split.from_file(path) == split
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left


def test_split_text_forms(tmp_path):
    text = tmp_path / "split.txt"
    text.write_text(
        "# my split\n[train]\nA\nB  # comment\n\n[val]\nC\n[test]\nD\nE\n", encoding="utf-8"
    )
    expected = Split(train=["A", "B"], val=["C"], test=["D", "E"])
    assert Split.from_file(text) == expected
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, ids in expected.as_dict().items():
        (folder / f"{name}.txt").write_text("\n".join(ids) + "\n")
    assert Split.from_file(folder) == expected
    (folder / "val.txt").unlink()
    with pytest.raises(ValueError, match="val.txt"):
        Split.from_file(folder)
    plain = tmp_path / "plain.txt"
    plain.write_text("A\nB\n")
    with pytest.raises(ValueError, match=r"\[train\]"):
        Split.from_file(plain)


def test_user_split_must_name_known_cases(tmp_path):
    cases = fake_cases("pretreat-mets", [f"BraTS-MET-{i:05d}-000" for i in range(4)])
    ids = [c.id for c in cases]
    good = tmp_path / "good.json"
    Split(train=ids[:2], val=ids[2:3], test=ids[3:]).to_json(good)
    assert load_split(good, cases).test == ids[3:]
    bad = tmp_path / "bad.json"
    Split(train=ids[:2], val=["BraTS-MET-99999-000"], test=ids[3:]).to_json(bad)
    with pytest.raises(ValueError, match="BraTS-MET-99999-000"):
        load_split(bad, cases)
    twice = Split(train=ids[:2], val=ids[1:2], test=ids[3:])
    with pytest.raises(ValueError, match="both train and val"):
        twice.check(ids)
    with pytest.raises(ValueError, match="missing"):
        Split.from_dict({"train": [], "val": []})
