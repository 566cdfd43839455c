"""End-to-end ``build_report`` and ``evaluate_predictions`` on fixtures written to disk here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from report_fixtures import fake_results, write_run_folders

from mmbench.reporting.api import build_report, evaluate_predictions
from mmbench.reporting.external import (
    PredictionError,
    label_map_from_regions,
    parse_prediction_name,
    prediction_file_name,
)
from mmbench.reporting.load import IncompleteRunWarning, load_results
from mmbench.reporting.tables import MixedPolicyError
from mmbench.subsets import FULL, Subset

SHAPE = (16, 16, 8)
CASES = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000")


def write_tiny_dataset(root: Path) -> Path:
    """Two BraTS 2024-layout cases (16×16×8, spacing 1×1×2): a nested tumour; case 2 has no ET."""
    folder = root / "brats2024"
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i, case in enumerate(CASES):
        d = folder / case
        d.mkdir(parents=True)
        label = np.zeros(SHAPE, np.uint8)
        label[4:12, 4:12, 2:6] = 2
        label[6:10, 6:10, 3:5] = 1
        if i == 0:
            label[7:9, 7:9, 3:5] = 3
        rng = np.random.default_rng(i)
        for suffix in ("t1n", "t1c", "t2w", "t2f"):
            img = (rng.random(SHAPE) * 100 + label * 50).astype(np.float32)
            nib.save(nib.Nifti1Image(img, affine), d / f"{case}-{suffix}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), d / f"{case}-seg.nii.gz")
    return folder


def write_predictions(folder: Path, shift: int, subsets=("1111", "0101")) -> None:
    """Predictions = the reference shifted by ``shift`` voxels along x, BraTS 2024 labels."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i, case in enumerate(CASES):
        wt = np.zeros(SHAPE, bool)
        wt[4 + shift : 12 + shift, 4:12, 2:6] = True
        tc = np.zeros(SHAPE, bool)
        tc[6 + shift : 10 + shift, 6:10, 3:5] = True
        et = np.zeros(SHAPE, bool)
        if i == 0:
            et[7 + shift : 9 + shift, 7:9, 3:5] = True
        label = label_map_from_regions(wt, tc, et)
        for code in subsets:
            nib.save(nib.Nifti1Image(label, affine), folder / prediction_file_name(case, code))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Three methods on brats2024 (so that the reference comparison applies), saved predictions
    on disk for the qualitative figure, built once for the module."""
    tmp = tmp_path_factory.mktemp("report")
    data = write_tiny_dataset(tmp / "data")
    df = fake_results(methods=("alpha", "beta", "gamma"), datasets=("brats2024",), n_cases=8)
    runs = write_run_folders(
        df, tmp / "results", extra_info={"data_root": str(data)}, params={"gamma": None}
    )
    for run in runs:
        if run.parts[-3] == "brats2024":
            write_predictions(
                run / "predictions", shift={"alpha": 0, "beta": 1}.get(run.parts[-2], 2)
            )
    summary = build_report(
        tmp / "results", tmp / "reports", compare_reference=True, with_std=True, n_boot=100
    )
    return tmp, summary


def test_every_file_written_and_non_empty(report) -> None:
    tmp, summary = report
    for path in summary.paths:
        assert path.is_file() and path.stat().st_size > 0, path
    names = {p.name for p in summary.figures}
    for ds in ("brats2024",):
        for stem in (f"heatmap_{ds}_dice", f"heatmap_{ds}_hd95", f"distribution_{ds}_dice"):
            assert {f"{stem}.png", f"{stem}.pdf"} <= names
        assert f"modality_drop_{ds}_dice.png" in names and f"params_{ds}.pdf" in names
    assert {"qualitative_brats2024.png", "qualitative_brats2024.pdf"} <= names
    for p in summary.figures:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    tables = {p.name for p in summary.tables}
    for stem in (
        "brats2024_dice",
        "brats2024_hd95",
        "family_brats2024_dice",
        "ranks_brats2024_hd95",
    ):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= tables


def test_reference_comparison_only_where_dataset_matches(report) -> None:
    tmp, summary = report
    tables = {p.name for p in summary.tables}
    assert "reference_brats2024_dice.csv" in tables and "reference_brats2024_hd95.md" in tables
    comp = pd.read_csv(tmp / "reports" / "tables" / "reference_brats2024_dice.csv")
    assert "WT pub:RA-HVED" in comp.columns and "WT ours:alpha" in comp.columns
    t1 = comp.set_index("subset").loc["T1"]
    published = pd.read_csv(
        Path(__file__).parents[1] / "mmbench/reporting/data/mstkdnet_tables.csv"
    )
    want = published.query(
        "dataset == 'brats2024' and metric == 'dice' and region == 'WT' and "
        "method == 'RA-HVED' and subset == 'T1'"
    )["value"]
    assert t1["WT pub:RA-HVED"] == pytest.approx(float(want.iloc[0]))
    assert any("`zero`" in c for c in summary.caveats)
    assert any("read by eye" in c for c in summary.caveats)


def test_no_reference_for_other_datasets_and_no_predictions_note(tmp_path) -> None:
    write_run_folders(fake_results(methods=("a", "b"), datasets=("toy",), n_cases=3), tmp_path)
    summary = build_report(
        tmp_path, tmp_path / "reports", compare_reference=True, html=False, n_boot=20
    )
    assert not any(p.name.startswith("reference_toy") for p in summary.tables)
    assert any("toy dice: no published numbers" in n for n in summary.notes)
    assert any("toy: no saved predictions" in n for n in summary.notes)
    assert not any(p.name.startswith("qualitative") for p in summary.figures)


def test_html_self_contained(report) -> None:
    tmp, summary = report
    text = summary.html.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == sum(p.suffix == ".png" for p in summary.figures)
    assert "<b>" in text and "●" in text and "Avg." in text
    assert "http://" not in text and "https://" not in text.replace("github.com", "")
    assert "<script" not in text


def test_html_renders_in_headless_chromium(report, tmp_path) -> None:
    """Load report.html in headless Chromium and take a screenshot (needs Debian's chromium;
    skipped only outside CI, a failure in CI)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: apt-get install -y chromium")
        pytest.skip("chromium not installed (set CI to make this a failure)")
    _, summary = report
    shot = tmp_path / "report.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        summary.html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page


def test_reference_data_byte_identical() -> None:
    shared = Path("/work/shared/reference")
    if not shared.is_dir():
        pytest.skip("shared reference folder not present")
    ours = Path(__file__).parents[1] / "mmbench/reporting/data"
    for name in ("mstkdnet_tables.csv", "adamm_fig9_approx.csv"):
        assert (ours / name).read_bytes() == (shared / name).read_bytes()


def test_incomplete_runs_skipped_with_warning(tmp_path) -> None:
    df = fake_results(methods=("a", "b"), n_cases=3)
    runs = write_run_folders(df, tmp_path)
    info = json.loads((runs[1] / "run.json").read_text())
    info["status"] = "training"
    (runs[1] / "run.json").write_text(json.dumps(info))
    with pytest.warns(IncompleteRunWarning, match="training"):
        got = load_results(tmp_path)
    assert set(got["method"]) == {"a"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(load_results(tmp_path, include_incomplete=True)["method"]) == {"a", "b"}
    assert {"family", "params", "run_dir"} <= set(got.columns)


def test_report_refuses_mixed_policies(tmp_path) -> None:
    a = fake_results(methods=("a",), n_cases=3)
    b = fake_results(methods=("b",), n_cases=3, empty_policy="zero")
    write_run_folders(pd.concat([a, b]), tmp_path / "results")
    with pytest.raises(MixedPolicyError):
        build_report(tmp_path / "results", tmp_path / "reports", plots_enabled=False, html=False)


def test_parse_prediction_names() -> None:
    assert parse_prediction_name("BraTS-GLI-00001-000__0101.nii.gz") == (
        "BraTS-GLI-00001-000",
        "T1ce+FLAIR",
    )
    assert parse_prediction_name("Brats18_CBICA_AAB_1__T1+T2.nii") == (
        "Brats18_CBICA_AAB_1",
        "T1+T2",
    )
    assert parse_prediction_name("case__0000.nii.gz") is None
    assert parse_prediction_name("case.nii.gz") is None
    assert prediction_file_name("x", FULL) == "x__1111.nii.gz"


def test_evaluate_external_predictions(tmp_path) -> None:
    pytest.importorskip("mmbench.datasets")
    data = write_tiny_dataset(tmp_path / "data")
    pred = tmp_path / "theirs"
    write_predictions(pred, shift=0, subsets=("1111",))
    write_predictions(pred, shift=1, subsets=("0001",))
    out = tmp_path / "results" / "brats2024" / "theirs" / "external"
    df = evaluate_predictions(pred, "brats2024", data_root=data, out=out)
    assert (out / "metrics.csv").is_file() and json.loads((out / "run.json").read_text())[
        "status"
    ] == "complete"
    v = df.set_index(["case", "subset", "region", "metric"])["value"]
    full, flair = FULL.name, Subset.from_code("0001").name
    assert v[(CASES[0], full, "WT", "dice")] == pytest.approx(1.0)
    assert v[(CASES[0], full, "ET", "hd95")] == pytest.approx(0.0)
    # shifted by one voxel: Dice of an 8-wide box shifted by 1 along x = 7/8
    assert v[(CASES[0], flair, "WT", "dice")] == pytest.approx(7 / 8)
    assert v[(CASES[1], full, "ET", "ref_voxels")] == 0
    assert v[(CASES[1], full, "ET", "dice")] == pytest.approx(1.0)  # both empty under penalty
    assert set(df["empty_policy"]) == {"penalty"}
    other = evaluate_predictions(
        pred, "brats2024", data_root=data, out=tmp_path / "zero", policy={"empty_policy": "zero"}
    )
    assert set(other["empty_policy"]) == {"zero"}
    # the result joins a report like any run
    summary = build_report(
        tmp_path / "results", tmp_path / "reports", plots_enabled=False, html=False
    )
    assert (tmp_path / "reports" / "tables" / "brats2024_dice.md").read_text().count("theirs") >= 3
    assert summary.tables


def test_evaluate_rejects_bad_predictions(tmp_path) -> None:
    pytest.importorskip("mmbench.datasets")
    data = write_tiny_dataset(tmp_path / "data")
    pred = tmp_path / "bad"
    pred.mkdir()
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)),
        pred / prediction_file_name(CASES[0], "1111"),
    )
    with pytest.raises(PredictionError, match="shape"):
        evaluate_predictions(pred, "brats2024", data_root=data, out=tmp_path / "o1")
    label = np.full(SHAPE, 7, np.uint8)
    nib.save(nib.Nifti1Image(label, np.eye(4)), pred / prediction_file_name(CASES[0], "1111"))
    with pytest.raises(PredictionError, match="label values"):
        evaluate_predictions(pred, "brats2024", data_root=data, out=tmp_path / "o2")
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(PredictionError, match="no prediction"):
        evaluate_predictions(empty, "brats2024", data_root=data, out=tmp_path / "o3")
