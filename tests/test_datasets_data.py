"""Registry, discovery, validation, load_dataset and check_dataset on tiny NIfTI files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmbench.datasets import (
    Case,
    DataRootError,
    DataValidationError,
    check_dataset,
    discover,
    format_check_report,
    get_dataset,
    list_datasets,
    load_dataset,
    resolve_root,
    validate,
)

SHAPE = (12, 12, 10)


def write_case(
    folder: Path,
    case_id: str,
    dataset: str,
    label: np.ndarray | None = None,
    ext: str = ".nii.gz",
    omit: tuple[str, ...] = (),
    arrays: dict[str, np.ndarray] | None = None,
    affines: dict[str, np.ndarray] | None = None,
    seed: int = 0,
) -> Path:
    """Write one case of ``dataset`` into ``folder/case_id``; ``arrays``/``affines`` override
    single files by suffix; ``omit`` leaves files out."""
    spec = get_dataset(dataset)
    rng = np.random.default_rng(seed)
    case_dir = folder / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    brain = np.zeros(SHAPE, bool)
    brain[2:10, 2:10, 1:9] = True
    if label is None:
        label = np.zeros(SHAPE, np.uint8)
        label[4:7, 4:7, 3:6] = spec.compartments["ED"]
        label[5, 5, 4] = spec.compartments["NETC"]
        label[5, 5, 5] = spec.compartments["ET"]
    arrays = arrays or {}
    affines = affines or {}
    for suffix in spec.file_suffixes:
        if suffix in omit:
            continue
        if suffix in arrays:
            data = arrays[suffix]
        elif suffix == spec.label_suffix:
            data = label
        else:
            data = np.where(brain, rng.uniform(10, 100, SHAPE), 0).astype(np.float32)
        affine = affines.get(suffix, np.eye(4))
        nib.save(
            nib.Nifti1Image(data, affine), case_dir / f"{case_id}{spec.separator}{suffix}{ext}"
        )
    return case_dir


# ---------------------------------------------------------------- registry


def test_registry_names_and_specs():
    assert list_datasets() == ["brats2018", "brats2024", "pretreat-mets", "synthetic"]
    b18 = get_dataset("brats2018")
    assert b18.label_values == (0, 1, 2, 4)
    assert b18.regions["ET"] == (4,) and b18.regions["WT"] == (1, 2, 4)
    assert b18.compartments == {"NETC": 1, "ED": 2, "ET": 4}
    assert b18.stratify_key == "grade" and b18.modality_suffixes["T1ce"] == "t1ce"
    b24 = get_dataset("brats2024")
    assert b24.label_values == (0, 1, 2, 3, 4)
    assert b24.regions["ET"] == (3,) and b24.regions["RC"] == (4,)
    assert b24.extra_regions == ("RC",) and b24.default_regions == ("WT", "TC", "ET")
    assert b24.group_key == "patient" and b24.group_of("BraTS-GLI-00012-101") == "BraTS-GLI-00012"
    mets = get_dataset("pretreat-mets")
    assert mets.label_values == (0, 1, 2, 3) and "RC" not in mets.regions
    assert get_dataset("synthetic").modality_suffixes["FLAIR"] == "t2f"
    assert len({get_dataset(n) for n in list_datasets()}) == 4  # specs are hashable


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="brats2018, brats2024, pretreat-mets, synthetic"):
        get_dataset("brats2021")


# ---------------------------------------------------------------- discovery


@pytest.mark.parametrize("graded", [True, False])
def test_discover_brats2018(tmp_path, graded):
    hgg = tmp_path / "HGG" if graded else tmp_path
    lgg = tmp_path / "LGG" if graded else tmp_path
    write_case(hgg, "Brats18_CBICA_AAB_1", "brats2018", ext=".nii")
    write_case(lgg, "Brats18_TCIA10_103_1", "brats2018")
    (tmp_path / "survival_data.csv").write_text("id,age\n")
    cases, problems = discover("brats2018", tmp_path)
    assert problems == []
    assert [c.id for c in cases] == ["Brats18_CBICA_AAB_1", "Brats18_TCIA10_103_1"]
    assert [c.grade for c in cases] == (["HGG", "LGG"] if graded else [None, None])
    first = cases[0]
    assert list(first.images) == ["T1", "T1ce", "T2", "FLAIR"]
    assert first.images["T1"].name == "Brats18_CBICA_AAB_1_t1.nii"
    assert first.images["T1ce"].name == "Brats18_CBICA_AAB_1_t1ce.nii"
    assert first.label.name == "Brats18_CBICA_AAB_1_seg.nii"
    assert cases[1].images["FLAIR"].name == "Brats18_TCIA10_103_1_flair.nii.gz"
    assert first.group == first.id


def test_discover_brats2024_nested_archives(tmp_path):
    write_case(tmp_path / "part1" / "training", "BraTS-GLI-00001-000", "brats2024")
    write_case(tmp_path / "part1" / "training", "BraTS-GLI-00001-001", "brats2024")
    write_case(tmp_path / "part2" / "more" / "deeper", "BraTS-GLI-00002-000", "brats2024")
    cases, problems = discover("brats2024", tmp_path)
    assert problems == []
    assert [c.id for c in cases] == [
        "BraTS-GLI-00001-000",
        "BraTS-GLI-00001-001",
        "BraTS-GLI-00002-000",
    ]
    assert [c.group for c in cases] == ["BraTS-GLI-00001"] * 2 + ["BraTS-GLI-00002"]
    assert cases[2].images["T1ce"].name == "BraTS-GLI-00002-000-t1c.nii.gz"
    assert cases[2].images["FLAIR"].name == "BraTS-GLI-00002-000-t2f.nii.gz"


def test_discover_pretreat_mets_ignores_spreadsheet(tmp_path):
    write_case(tmp_path, "BraTS-MET-00001-000", "pretreat-mets")
    write_case(tmp_path, "BraTS-MET-00002-000", "pretreat-mets")
    (tmp_path / "Pretreat-MetsToBrain-Masks_clinical.xlsx").write_bytes(b"PK\x03\x04junk")
    (tmp_path / "README.txt").write_text("hello")
    cases, problems = discover("pretreat-mets", tmp_path)
    assert problems == []
    assert [c.id for c in cases] == ["BraTS-MET-00001-000", "BraTS-MET-00002-000"]
    assert cases[0].group == "BraTS-MET-00001-000"


def test_discover_synthetic_layout(tmp_path):
    for i in range(3):
        write_case(tmp_path, f"BraTS-SYN-{i:05d}-000", "synthetic")
    cases, problems = discover("synthetic", tmp_path)
    assert problems == [] and len(cases) == 3
    assert cases[0].label.name == "BraTS-SYN-00000-000-seg.nii.gz"


def test_missing_file_is_a_problem_not_an_exception(tmp_path):
    write_case(tmp_path, "BraTS-GLI-00001-000", "brats2024")
    bad = write_case(tmp_path, "BraTS-GLI-00002-000", "brats2024", omit=("t2f",))
    empty = tmp_path / "BraTS-GLI-00003-000"
    empty.mkdir()
    cases, problems = discover("brats2024", tmp_path)
    assert [c.id for c in cases] == ["BraTS-GLI-00001-000"]
    by_case = {p.case: p for p in problems}
    assert by_case["BraTS-GLI-00002-000"].file == str(bad / "BraTS-GLI-00002-000-t2f.nii.gz")
    assert by_case["BraTS-GLI-00002-000"].problem == "missing file"
    # A case folder with no file at all reports each missing file.
    assert sum(p.case == "BraTS-GLI-00003-000" for p in problems) == 5


def test_resolve_root_variants(tmp_path, monkeypatch):
    (tmp_path / "brats2024").mkdir()
    assert resolve_root("brats2024", tmp_path) == tmp_path / "brats2024"
    assert resolve_root("brats2018", tmp_path / "brats2024") == tmp_path / "brats2024"
    monkeypatch.setenv("MMBENCH_DATA", str(tmp_path))
    assert resolve_root("brats2024") == tmp_path / "brats2024"
    with pytest.raises(DataRootError) as err:
        resolve_root("pretreat-mets")
    message = str(err.value)
    assert str(tmp_path / "pretreat-mets") in message and "t1n" in message
    assert isinstance(err.value, ValueError)
    monkeypatch.delenv("MMBENCH_DATA")
    with pytest.raises(DataRootError, match="MMBENCH_DATA"):
        resolve_root("brats2018")
    with pytest.raises(DataRootError, match="nope"):
        resolve_root("brats2018", tmp_path / "nope")


# ---------------------------------------------------------------- validation

GOOD = "BraTS-GLI-00001-000"
BAD = "BraTS-GLI-00002-000"


def _bad_case(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """Write a bad case; return (path of the offending file, expected problem text)."""
    nan = np.full(SHAPE, 5.0, np.float32)
    if kind == "missing":
        return write_case(tmp_path, BAD, "brats2024") / f"{BAD}-t1c.nii.gz", "missing file"
    if kind == "corrupt":
        folder = write_case(tmp_path, BAD, "brats2024")
        (folder / f"{BAD}-t2w.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
        return folder / f"{BAD}-t2w.nii.gz", "unreadable"
    if kind == "4d":
        folder = write_case(tmp_path, BAD, "brats2024", arrays={"t1n": np.ones((*SHAPE, 2))})
        return folder / f"{BAD}-t1n.nii.gz", "not 3-D"
    if kind == "shape":
        folder = write_case(tmp_path, BAD, "brats2024", arrays={"t2f": np.ones((12, 12, 9))})
        return folder / f"{BAD}-t2f.nii.gz", "shape"
    if kind == "affine":
        shifted = np.eye(4)
        shifted[0, 3] = 0.5
        folder = write_case(tmp_path, BAD, "brats2024", affines={"t1c": shifted})
        return folder / f"{BAD}-t1c.nii.gz", "affine"
    if kind == "nan":
        nan[3, 3, 3] = np.nan
        folder = write_case(tmp_path, BAD, "brats2024", arrays={"t2w": nan})
        return folder / f"{BAD}-t2w.nii.gz", "NaN"
    if kind == "inf":
        nan[3, 3, 3] = np.inf
        folder = write_case(tmp_path, BAD, "brats2024", arrays={"t1n": nan})
        return folder / f"{BAD}-t1n.nii.gz", "Inf"
    if kind == "label":
        label = np.zeros(SHAPE, np.uint8)
        label[4, 4, 4] = 5
        folder = write_case(tmp_path, BAD, "brats2024", label=label)
        return folder / f"{BAD}-seg.nii.gz", "label values [5]"
    if kind == "zero":
        folder = write_case(tmp_path, BAD, "brats2024", arrays={"t2f": np.zeros(SHAPE)})
        return folder / f"{BAD}-t2f.nii.gz", "FLAIR is all zero"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "corrupt", "4d", "shape", "affine", "nan", "inf", "label", "zero"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_input_is_named_and_the_rest_loads(tmp_path, kind):
    write_case(tmp_path, GOOD, "brats2024")
    bad_file, text = _bad_case(tmp_path, kind)
    cases, _ = discover("brats2024", tmp_path)
    if kind == "missing":
        # Removed after discovery: validation must catch it too.
        bad_file.unlink()
    valid, problems = validate("brats2024", cases)
    assert [c.id for c in valid] == [GOOD]
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.case == BAD and p.file == str(bad_file) and text in p.problem
    assert p.as_dict() == {"case": BAD, "file": str(bad_file), "problem": p.problem}

    index = load_dataset("brats2024", tmp_path)
    assert index.case_ids == [GOOD] and [q.case for q in index.problems] == [BAD]
    with pytest.raises(DataValidationError, match=BAD):
        load_dataset("brats2024", tmp_path, strict=True)


def test_affine_within_tolerance_and_empty_label_are_valid(tmp_path):
    nudged = np.eye(4)
    nudged[0, 3] = 5e-4
    write_case(tmp_path, GOOD, "brats2024", affines={"t2w": nudged})
    write_case(tmp_path, BAD, "brats2024", label=np.zeros(SHAPE, np.uint8))
    index = load_dataset("brats2024", tmp_path, strict=True)
    assert index.case_ids == [GOOD, BAD] and index.problems == []
    assert index.root == tmp_path and index.spec.name == "brats2024"


def test_label_value_valid_in_one_dataset_not_in_another(tmp_path):
    label = np.zeros(SHAPE, np.uint8)
    label[4, 4, 4] = 3  # ET in BraTS-METS convention; BraTS 2018 has no label 3
    write_case(tmp_path, "BraTS-MET-00001-000", "pretreat-mets", label=label)
    write_case(tmp_path / "b18", "Brats18_2013_2_1", "brats2018", label=label)
    assert load_dataset("pretreat-mets", tmp_path).problems == []
    with pytest.raises(DataRootError):
        load_dataset("brats2018", tmp_path / "b18")


def test_strict_lists_all_problems(tmp_path):
    write_case(tmp_path, GOOD, "brats2024")
    nan = np.zeros(SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    write_case(tmp_path, BAD, "brats2024", arrays={"t1n": nan, "t2w": nan})
    write_case(tmp_path, "BraTS-GLI-00003-000", "brats2024", omit=("seg",))
    cases, _ = discover("brats2024", tmp_path)
    with pytest.raises(DataValidationError) as err:
        validate("brats2024", cases, strict=True)
    assert "2 data problem(s)" in str(err.value)
    assert "T1 has 1 NaN" in str(err.value) and "T2 has 1 NaN" in str(err.value)
    with pytest.raises(DataValidationError) as err:
        load_dataset("brats2024", tmp_path, strict=True)
    assert "3 data problem(s)" in str(err.value) and "BraTS-GLI-00003-000" in str(err.value)


def test_no_valid_case_message(tmp_path):
    (tmp_path / "brats2018").mkdir()
    with pytest.raises(DataRootError) as err:
        load_dataset("brats2018", tmp_path)
    message = str(err.value)
    assert "No valid brats2018 case" in message and str(tmp_path / "brats2018") in message
    assert "HGG|LGG" in message and "\n" not in message

    write_case(tmp_path / "brats2018", "Brats18_2013_2_1", "brats2018", omit=("flair",))
    with pytest.raises(DataRootError, match="missing file"):
        load_dataset("brats2018", tmp_path)


def test_parallel_validation_matches_serial(tmp_path):
    for i in range(3):
        write_case(tmp_path, f"BraTS-GLI-0000{i}-000", "brats2024", seed=i)
    _bad_case(tmp_path, "nan")
    cases, _ = discover("brats2024", tmp_path)
    serial = validate("brats2024", cases)
    parallel = validate("brats2024", cases, n_jobs=2)
    assert [c.id for c in serial[0]] == [c.id for c in parallel[0]]
    assert serial[1] == parallel[1]


# ---------------------------------------------------------------- check report


def test_check_dataset_report(tmp_path):
    root = tmp_path / "brats2024"
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 1:3, 1:3] = 2  # 8 voxels ED only: TC and ET empty
    label[0, 0, 0] = 4  # one RC voxel
    write_case(root, "BraTS-GLI-00001-000", "brats2024")  # 27 voxels: 25 ED, 1 NETC, 1 ET
    write_case(root, "BraTS-GLI-00001-001", "brats2024", label=label)
    _bad_case(root, "label")
    report = check_dataset("brats2024", tmp_path)
    assert set(report) == {
        "dataset",
        "root",
        "hint",
        "valid",
        "invalid",
        "label_histogram",
        "empty_regions",
        "shapes",
        "spacings",
    }
    assert report["dataset"] == "brats2024" and report["root"] == str(root)
    assert report["valid"] == ["BraTS-GLI-00001-000", "BraTS-GLI-00001-001"]
    assert len(report["invalid"]) == 1 and report["invalid"][0]["case"] == BAD
    n = int(np.prod(SHAPE))
    assert report["label_histogram"] == {0: 2 * n - 27 - 9, 1: 1, 2: 25 + 8, 3: 1, 4: 1}
    assert report["empty_regions"] == {"WT": 0, "TC": 1, "ET": 1, "RC": 1}
    assert report["shapes"] == {"12x12x10": 2}
    assert report["spacings"] == {"1x1x1": 2}
    text = format_check_report(report)
    assert "valid cases:   2" in text and BAD in text and "TC: 1/2" in text


def test_check_dataset_spacing_counts(tmp_path):
    spaced = np.diag([1.0, 1.0, 2.0, 1.0])
    write_case(tmp_path, GOOD, "brats2024")
    all_files = ("t1n", "t1c", "t2w", "t2f", "seg")
    write_case(tmp_path, BAD, "brats2024", affines={s: spaced for s in all_files})
    report = check_dataset("brats2024", tmp_path)
    assert report["spacings"] == {"1x1x1": 1, "1x1x2": 1}


def test_case_item_is_canonical_order(tmp_path):
    write_case(tmp_path, GOOD, "brats2024")
    (case,) = load_dataset("brats2024", tmp_path).cases
    assert isinstance(case, Case)
    item = case.as_item()
    assert [Path(p).name.split("-")[-1] for p in item["image"]] == [
        "t1n.nii.gz",
        "t1c.nii.gz",
        "t2w.nii.gz",
        "t2f.nii.gz",
    ]
