"""Write phantom datasets to disk in the BraTS 2024 layout and cache them by parameters.

Layout (same as BraTS 2024, ``BraTS-SYN-`` prefix)::

    <out_dir>/phantoms.json
    <out_dir>/BraTS-SYN-00000-000/BraTS-SYN-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz

``t1n`` = T1, ``t1c`` = T1ce, ``t2w`` = T2, ``t2f`` = FLAIR; images float32, ``seg`` uint8, the same
affine in all five files. ``mmbench data synth`` calls :func:`write_phantoms`.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np

from mmbench.atomic import atomic_write_text
from mmbench.datasets.phantom import (
    LABELS,
    MODALITIES,
    PhantomConfig,
    PhantomGenerator,
    case_id,
    grid_spacing,
)

__all__ = [
    "FILE_SUFFIXES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "cache_key",
    "case_files",
    "default_cache_root",
    "ensure_synthetic",
    "write_phantoms",
]

#: Bump whenever the generated arrays change for the same parameters (invalidates caches).
GENERATOR_VERSION = "2"
MANIFEST = "phantoms.json"
#: BraTS 2024 file suffix per canonical modality, then the label.
FILE_SUFFIXES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f", "seg")
# gzip level 1: the phantoms are noise-dominated and level 6 costs ~3x the time for ~5% space.
_COMPRESSLEVEL = 1


def default_cache_root() -> Path:
    """``$MMBENCH_CACHE`` if set, else ``~/.cache/mmbench/synthetic``."""
    env = os.environ.get("MMBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmbench" / "synthetic"


def case_files(out_dir: str | Path, index: int) -> list[Path]:
    """Paths of the five files of case ``index``: T1, T1ce, T2, FLAIR, label."""
    cid = case_id(index)
    return [Path(out_dir) / cid / f"{cid}-{s}.nii.gz" for s in FILE_SUFFIXES]


def _params(cases: int, shape, mode: str, seed: int) -> dict:
    cfg = PhantomConfig(shape=tuple(shape), mode=mode, seed=seed)  # validates
    return {
        "generator_version": GENERATOR_VERSION,
        "cases": int(cases),
        "shape": list(cfg.shape),
        "mode": cfg.mode,
        "seed": cfg.seed,
    }


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with gzip.open(path, "wb", compresslevel=_COMPRESSLEVEL) as fh:
        fh.write(img.to_bytes())


def _write_case(config: PhantomConfig, index: int, out_dir: Path) -> str:
    """Generate case ``index`` and write it atomically (temp folder, then rename)."""
    images, label, affine = PhantomGenerator(config).generate(index)
    cid = case_id(index)
    final = out_dir / cid
    tmp = out_dir / f".tmp-{cid}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for m, suffix in enumerate(FILE_SUFFIXES[:4]):
            _save_nifti(images[m], affine, tmp / f"{cid}-{suffix}.nii.gz")
        _save_nifti(label.astype(np.uint8), affine, tmp / f"{cid}-seg.nii.gz")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cid


def _write_manifest(out_dir: Path, params: dict) -> None:
    from mmbench import __version__

    manifest = {
        **params,
        "generator": "mmbench.datasets.phantom.PhantomGenerator",
        "mmbench_version": __version__,
        "spacing_mm": list(grid_spacing(tuple(params["shape"]))),
        "axes": "array axes (D, H, W) = NIfTI (i, j, k) along RAS (x, y, z)",
        "modalities": dict(zip(FILE_SUFFIXES[:4], MODALITIES)),
        "labels": {str(k): v for k, v in LABELS.items()},
        "case_ids": [case_id(i) for i in range(params["cases"])],
    }
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _generate(out_dir: Path, params: dict, indices: list[int], n_jobs: int, progress: bool) -> None:
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    config = PhantomConfig(tuple(params["shape"]), params["mode"], params["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = (delayed(_write_case)(config, i, out_dir) for i in indices)
    results = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(jobs)
    desc = f"phantoms {params['mode']} {'x'.join(map(str, params['shape']))}"
    for _ in tqdm(results, total=len(indices), desc=desc, disable=not progress, unit="case"):
        pass
    # Cases left over from an earlier, larger run would otherwise be discovered as data.
    keep = {case_id(i) for i in range(params["cases"])}
    for stale in out_dir.glob("BraTS-SYN-*-000"):
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale)
    _write_manifest(out_dir, params)


def write_phantoms(
    out_dir: str | Path,
    cases: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    mode: str = "glioma",
    seed: int = 0,
    n_jobs: int = -1,
    progress: bool = True,
) -> Path:
    """Write ``cases`` phantoms (indices ``0..cases-1``) under ``out_dir`` in the BraTS 2024 layout.

    Cases are generated in parallel (joblib loky, ``n_jobs`` workers, -1 = all cores), each written
    into a temporary folder and renamed into place; ``phantoms.json`` (parameters, generator and
    package version, spacing, case ids) is written last. Existing case folders are replaced and
    ``BraTS-SYN-*`` case folders beyond ``cases`` (left by an earlier run) are removed.
    Returns ``out_dir`` as a :class:`Path`. This is what ``mmbench data synth`` runs.
    """
    if cases < 1:
        raise ValueError("cases must be >= 1")
    out = Path(out_dir)
    _generate(out, _params(cases, shape, mode, seed), list(range(cases)), n_jobs, progress)
    return out


def cache_key(cases: int, shape, mode: str, seed: int) -> str:
    """Folder name encoding the parameters, e.g. ``glioma-48x48x48-seed0-n40-v1``."""
    p = _params(cases, shape, mode, seed)
    dims = "x".join(str(s) for s in p["shape"])
    return f"{p['mode']}-{dims}-seed{p['seed']}-n{p['cases']}-v{GENERATOR_VERSION}"


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _matches(manifest: dict | None, params: dict) -> bool:
    return manifest is not None and all(manifest.get(k) == v for k, v in params.items())


def _missing_cases(folder: Path, cases: int) -> list[int]:
    return [i for i in range(cases) if not all(f.is_file() for f in case_files(folder, i))]


def ensure_synthetic(
    cache_root: str | Path | None,
    cases: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    mode: str = "glioma",
    seed: int = 0,
    n_jobs: int = -1,
    progress: bool = True,
) -> Path:
    """Return ``cache_root/<key>/`` holding the requested phantoms, generating them if needed.

    Reuses the folder untouched when its manifest matches the parameters (and generator version)
    and all files exist; regenerates only the missing cases when the manifest matches but files
    are missing; otherwise (no or mismatching manifest) regenerates the whole folder. A full
    generation goes to a temporary sibling folder that is renamed into place, so a concurrent or
    interrupted run never leaves a half-written folder that looks valid. ``cache_root=None`` uses
    :func:`default_cache_root`.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    params = _params(cases, shape, mode, seed)
    folder = root / cache_key(cases, shape, mode, seed)
    if _matches(_read_manifest(folder), params):
        missing = _missing_cases(folder, cases)
        if missing:
            _generate(folder, params, missing, n_jobs, progress)
        return folder

    tmp = root / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, params, list(range(cases)), n_jobs, progress)
        if _matches(_read_manifest(folder), params):
            return folder  # another process finished the same folder meanwhile
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished first; use its copy if valid.
            if not _matches(_read_manifest(folder), params):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
