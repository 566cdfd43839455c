"""Qualitative figure: one case, a few subsets, image slice with predicted and reference contours.

Predictions come from run folders' ``predictions/<case>__<subset code>.nii.gz`` (uint8 label map,
BraTS 2024 convention 1 NETC, 2 ED, 3 ET, on the case's native grid). The image and reference are
found by searching the run's ``data_root`` recursively for ``<case>-t1c.nii.gz`` / ``<case>-seg``
(BraTS 2024 layout) or ``<case>_t1ce.nii.gz`` / ``<case>_seg`` (BraTS 2018 layout, ET = label 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmbench.benchmark.schema import PREDICTIONS_DIR, prediction_file_name
from mmbench.regions import LABEL_CONVENTIONS, region_masks
from mmbench.subsets import ALL_SUBSETS, Subset, as_subset

DEFAULT_SUBSETS: tuple[str, ...] = ("T1+T1ce+T2+FLAIR", "T1+T2+FLAIR", "T1ce", "FLAIR")
"""Full set, full without T1ce (ET suffers), and two singles."""

BACKGROUND_MODALITY = "T1ce"
"""The image under the contours (the modality that shows the enhancing tumour)."""

CROP_MARGIN = 0.05
"""Share of the brain's extent kept around its bounding box in the qualitative panels."""


def brain_box(image: np.ndarray, margin: int | None = None) -> tuple[slice, slice]:
    """In-plane bounding box of the brain on a 2-D slice (voxels brighter than a tenth of the
    99th intensity percentile, which leaves out background noise), widened by ``margin`` and
    made square so that every panel keeps the same aspect. ``margin`` in voxels; default
    :data:`CROP_MARGIN` of the brain's larger extent, at least one voxel."""
    top = float(np.percentile(image, 99)) if image.size else 0.0
    if top <= 0:
        return slice(0, image.shape[0]), slice(0, image.shape[1])
    mask = image > 0.1 * top
    xs, ys = np.nonzero(mask)
    if xs.size == 0:
        return slice(0, image.shape[0]), slice(0, image.shape[1])
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    extent = max(x1 - x0, y1 - y0)
    if margin is None:
        margin = max(1, round(CROP_MARGIN * extent))
    side = extent + 2 * margin
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2

    def span(centre: int, size: int) -> slice:
        lo = max(0, centre - side // 2)
        hi = min(size, lo + side)
        return slice(max(0, hi - side), hi)

    return span(cx, image.shape[0]), span(cy, image.shape[1])


@dataclass(frozen=True)
class CaseFiles:
    """Paths of a case's T1ce image and label map, and the label convention of the map."""

    image: Path
    label: Path
    convention: str


def _first(root: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        for path in root.rglob(name):
            if path.is_file():
                return path
    return None


def find_case_files(data_root: str | Path, case: str) -> CaseFiles | None:
    """Locate a case's T1ce image and label under ``data_root`` (searched recursively)."""
    root = Path(data_root)
    if not root.is_dir():
        return None
    for ext in (".nii.gz", ".nii"):
        label = _first(root, [f"{case}-seg{ext}"])
        if label is not None:
            image = _first(
                label.parent, [f"{case}-t1c{ext}", f"{case}-t1c.nii.gz", f"{case}-t1c.nii"]
            )
            if image is not None:
                return CaseFiles(image, label, "brats2024")
        label = _first(root, [f"{case}_seg{ext}"])
        if label is not None:
            image = _first(label.parent, [f"{case}_t1ce.nii.gz", f"{case}_t1ce.nii"])
            if image is not None:
                return CaseFiles(image, label, "brats2018")
    return None


def regions_of(labels: np.ndarray, convention: str) -> dict[str, np.ndarray]:
    """Boolean WT/TC/ET masks of a label map in ``convention``."""
    return region_masks(labels, LABEL_CONVENTIONS[convention])


def prediction_path(run_dir: str | Path, case: str, subset: Subset | str) -> Path:
    """Path of a saved prediction, ``predictions/<case>__<subset code>.nii.gz``."""
    return Path(run_dir) / PREDICTIONS_DIR / prediction_file_name(case, subset)


def saved_cases(run_dir: str | Path) -> dict[str, set[str]]:
    """Case id → subset codes with a saved prediction in a run folder."""
    out: dict[str, set[str]] = {}
    folder = Path(run_dir) / PREDICTIONS_DIR
    if not folder.is_dir():
        return out
    for path in folder.glob("*__*.nii*"):
        stem = path.name.split(".nii")[0]
        case, _, code = stem.rpartition("__")
        out.setdefault(case, set()).add(code)
    return out


def _load(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(str(path)).dataobj)


def qualitative_figure(
    runs: Sequence[dict],
    out_dir: str | Path,
    dataset: str,
    case: str | None = None,
    subsets: Sequence[str] = DEFAULT_SUBSETS,
    max_methods: int = 6,
) -> tuple[list[Path], str | None]:
    """Draw the qualitative figure for one dataset.

    Args:
        runs: one dict per method with keys ``method``, ``run_dir``, ``data_root``.
        out_dir: folder for ``qualitative_<dataset>.{png,pdf}``.
        dataset: dataset name (for the file name and title).
        case: case to show; default the first case (sorted) with the most methods having every
            requested subset saved.
        subsets: subsets (columns), those without saved predictions are dropped.
        max_methods: at most this many methods (rows).

    Returns:
        ``(paths, note)``: written files and ``None``, or no files and a note saying why.
    """
    from mmbench.reporting.plots import REGION_COLOURS, _margins, _new_figure, save_figure

    saved = {r["method"]: (r, saved_cases(r["run_dir"])) for r in runs}
    saved = {m: v for m, v in saved.items() if v[1]}
    if not saved:
        return [], f"{dataset}: no saved predictions, qualitative figure skipped."
    codes = [as_subset(s).code for s in subsets]
    if case is None:
        counts: dict[str, tuple[int, int]] = {}
        for _, cases in saved.values():
            for c, have in cases.items():
                n_sub = sum(code in have for code in codes)
                best = counts.get(c, (0, 0))
                counts[c] = (best[0] + (n_sub == len(codes)), max(best[1], n_sub))
        case = sorted(counts, key=lambda c: (-counts[c][0], -counts[c][1], c))[0]
    have = set().union(*(cs.get(case, set()) for _, cs in saved.values()))
    codes = [code for code in codes if code in have]
    if len(codes) < min(len(subsets), 4):  # fill up with whatever else was saved for the case
        extra = [s.code for s in reversed(ALL_SUBSETS) if s.code in have and s.code not in codes]
        codes += extra[: min(len(subsets), 4) - len(codes)]
    methods = [m for m, (_, cs) in saved.items() if case in cs][:max_methods]
    if not codes or not methods:
        return [], f"{dataset}: no saved predictions for case {case}, qualitative figure skipped."
    info = saved[methods[0]][0]
    files = None
    for m in methods:
        root = saved[m][0].get("data_root")
        if root:
            files = find_case_files(root, case)
            if files is not None:
                break
    if files is None:
        return [], (
            f"{dataset}: image/label of case {case} not found under data_root "
            f"({info.get('data_root')!r}), qualitative figure skipped."
        )
    image = _load(files.image).astype(np.float32)
    ref = regions_of(_load(files.label), files.convention)
    # The slice where the regions together cover most: shows ET and TC, not only oedema.
    area = sum(mask.sum(axis=(0, 1)) for mask in ref.values())
    z = int(np.argmax(area)) if area.max() > 0 else image.shape[2] // 2
    lo, hi = np.percentile(image[..., z], [1, 99.5])
    bx, by = brain_box(image[..., z])

    # The title needs its own band above the column headers: 3 lines at 7 pt plus the headers.
    fig = _new_figure(2.2 * len(codes) + 0.4, 2.2 * len(methods) + 1.0)
    _margins(fig, 0.35, 0.1, 0.1, 0.95, wspace=0.03, hspace=0.03)
    axes = fig.subplots(len(methods), len(codes), squeeze=False)
    for i, method in enumerate(methods):
        run_dir = saved[method][0]["run_dir"]
        for j, code in enumerate(codes):
            ax = axes[i, j]
            ax.imshow(image[bx, by, z].T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            path = prediction_path(run_dir, case, code)
            for region, colour in REGION_COLOURS.items():
                r = ref[region][bx, by, z].T
                if r.any():
                    ax.contour(r, levels=[0.5], colors=[colour], linewidths=0.8, linestyles="--")
            if path.is_file():
                pred = regions_of(_load(path), "brats2024")
                for region, colour in REGION_COLOURS.items():
                    p = pred[region][bx, by, z].T
                    if p.any():
                        ax.contour(p, levels=[0.5], colors=[colour], linewidths=0.9)
            else:
                ax.text(0.5, 0.5, "not saved", transform=ax.transAxes, ha="center", color="w")
            if i == 0:
                ax.set_title(Subset.from_code(code).name, fontsize=8)
            if j == 0:
                ax.set_ylabel(method, fontsize=8)
    fig.suptitle(
        f"{dataset} · {case} · axial slice {z} · background: {BACKGROUND_MODALITY}\n"
        "prediction solid, reference dashed · WT yellow, TC red, ET cyan\n"
        "columns: modalities given to the method",
        fontsize=7,
        y=1 - 0.08 / fig.get_size_inches()[1],
        va="top",
    )
    return save_figure(fig, Path(out_dir) / f"qualitative_{dataset}"), None
