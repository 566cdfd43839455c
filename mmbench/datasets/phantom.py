"""Synthetic four-contrast brain-tumour phantoms (the embedded ``synthetic`` dataset).

Anatomy comes from the MNI152 2009a template and its grey/white-matter probability maps that
ship inside the nilearn wheel (no download). Each case is a randomly deformed, rotated and scaled
copy of that anatomy, resampled to the requested grid, with tumour compartments painted from
thresholded smooth random fields and four MRI-like contrasts synthesised from a per-tissue
intensity table, partial-volume blur, a multiplicative bias field and Rician noise.

Conventions
-----------
* Array axes ``(D, H, W)`` are the NIfTI voxel axes ``(i, j, k)`` and point along RAS
  ``(x: left->right, y: posterior->anterior, z: inferior->superior)``.
* The grid always covers the BraTS field of view of 240 x 240 x 155 mm, so the voxel spacing is
  ``(240 / D, 240 / H, 155 / W)`` mm; ``(240, 240, 155)`` gives 1 mm isotropic.
* Images are float32 ``(4, D, H, W)`` in canonical order T1, T1ce, T2, FLAIR; labels are uint8
  ``(D, H, W)`` in the BraTS 2024 convention (0 bg, 1 NETC, 2 SNFH/oedema, 3 ET, 4 RC).
* Case ``i`` depends only on ``(seed, i, shape, mode)``; every random draw uses a generator seeded
  from ``[seed, i, stream]``. Draws that shape the phantom do not depend on the grid, so the same
  case looks the same at 48^3 and at 240 x 240 x 155 (only the voxel noise differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

from mmbench.subsets import MODALITIES

__all__ = [
    "BRATS_FOV_MM",
    "CONTRAST_TABLE",
    "GLIOMA_NO_ET_FRACTION",
    "LABELS",
    "MODALITIES",
    "MODES",
    "TISSUES",
    "PhantomCase",
    "PhantomConfig",
    "PhantomGenerator",
    "case_id",
    "grid_affine",
    "grid_spacing",
]

Mode = Literal["glioma", "mets", "post-treatment"]
MODES: tuple[str, ...] = ("glioma", "mets", "post-treatment")
LABELS: dict[int, str] = {0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"}

#: Physical field of view (mm) along the array axes (x, y, z), as BraTS 240 x 240 x 155 at 1 mm.
BRATS_FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)

#: Tissue classes of the contrast table, in column order.
TISSUES: tuple[str, ...] = ("background", "CSF", "GM", "WM", "NETC", "oedema", "ET", "cavity")
_BG, _CSF, _GM, _WM, _NETC, _OED, _ET, _CAV = range(len(TISSUES))

#: Mean intensity per tissue (columns as :data:`TISSUES`) per modality (rows as
#: :data:`MODALITIES`), before bias, noise and the per-case global scale.
#: Design: ET differs from the core only in T1ce (in T1, T2 and FLAIR it sits within 0.02 of the
#: core); FLAIR shows oedema brightest and CSF dark; T2 shows oedema and CSF bright; T1 shows the
#: core dark; oedema is GM-like (low contrast) in T1 and T1ce so that WT needs T2 or FLAIR.
CONTRAST_TABLE: np.ndarray = np.array(
    [
        # bg   CSF   GM    WM    NETC  oed   ET    cavity
        [0.0, 0.25, 0.55, 0.78, 0.32, 0.60, 0.33, 0.22],  # T1
        [0.0, 0.28, 0.57, 0.76, 0.30, 0.62, 1.25, 0.25],  # T1ce
        [0.0, 1.00, 0.62, 0.45, 0.88, 0.85, 0.87, 1.00],  # T2
        [0.0, 0.12, 0.52, 0.42, 0.62, 1.00, 0.63, 0.10],  # FLAIR
    ],
    dtype=np.float32,
)

#: Fraction of glioma / post-treatment cases painted without an enhancing rim (LGG-like).
GLIOMA_NO_ET_FRACTION = 0.25

# Rician noise std and partial-volume blur, in table units / output voxels.
_NOISE_SIGMA = 0.035
_PV_SIGMA_VOX = 0.6
# Mean template->subject scale: MNI152 is larger than an average brain and its z extent (155 mm)
# would otherwise fill the whole BraTS field of view.
_BASE_SCALE = 0.9
_GLOBAL_INTENSITY = 1000.0

# Random-stream ids: keep the phantom's geometry independent of the grid and of the mode.
_S_ANATOMY, _S_TUMOUR, _S_CAVITY, _S_CONTRAST, _S_VOXEL_NOISE = range(5)


class PhantomCase(NamedTuple):
    """One generated case; unpacks as ``images, label, affine``.

    images: float32 ``(4, D, H, W)``, T1, T1ce, T2, FLAIR, arbitrary units, 0 outside the brain.
    label: uint8 ``(D, H, W)``, BraTS 2024 labels.
    affine: float64 ``(4, 4)`` voxel -> RAS mm.
    """

    images: np.ndarray
    label: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters that, with the case index, fully determine a phantom.

    shape: grid ``(D, H, W)`` in voxels along (x, y, z); spacing is ``BRATS_FOV_MM / shape`` mm.
    mode: ``"glioma"``, ``"mets"`` (1..5 small lesions) or ``"post-treatment"`` (glioma plus a
    resection cavity, label 4).
    seed: dataset seed.
    """

    shape: tuple[int, int, int] = (64, 64, 64)
    mode: Mode = "glioma"
    seed: int = 0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 8:
            raise ValueError(f"shape must be three sizes >= 8, got {self.shape!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "seed", int(self.seed))


def case_id(index: int) -> str:
    """BraTS-2024-style case id of phantom ``index``, e.g. ``BraTS-SYN-00007-000``."""
    return f"BraTS-SYN-{int(index):05d}-000"


def grid_spacing(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel spacing (mm) of a grid covering the BraTS field of view."""
    return tuple(float(f) / int(n) for f, n in zip(BRATS_FOV_MM, shape))  # type: ignore[return-value]


def grid_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """RAS voxel->mm affine ``(4, 4)`` of the phantom grid; the grid is centred on the brain."""
    spacing = np.array(grid_spacing(shape))
    centre = _template()["centre"]
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = centre - (np.array(shape) - 1) / 2.0 * spacing
    return affine


# --------------------------------------------------------------------------- template anatomy


@lru_cache(maxsize=1)
def _template() -> dict[str, np.ndarray]:
    """MNI152 anatomy at 1 mm, loaded once per process.

    Returns float32 maps ``mask`` (hard brain mask as 0/1), ``gm``, ``wm`` (probabilities, zero
    outside the mask), the template ``origin`` (mm of voxel 0), the brain bounding-box ``centre``
    (mm), and at 2 mm: ``dist2`` (distance to the mask border, mm) and ``wm2``.
    """
    from nilearn import datasets  # local import: nilearn is slow to import

    t1 = datasets.load_mni152_template(resolution=1)
    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    affine = np.asarray(t1.affine)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0) or not np.allclose(gm_img.affine, affine):
        raise RuntimeError("unexpected MNI152 template geometry in this nilearn version")
    mask = np.asarray(t1.dataobj, dtype=np.float32) > 0
    gm = np.clip(np.asarray(gm_img.dataobj, dtype=np.float32), 0, 1) * mask
    wm = np.clip(np.asarray(wm_img.dataobj, dtype=np.float32), 0, 1) * mask
    # GM + WM may exceed 1 by rounding; CSF is defined as the remainder of the mask.
    wm = np.minimum(wm, 1.0 - gm)
    idx = np.argwhere(mask)
    origin = affine[:3, 3].astype(np.float64)
    centre = origin + (idx.min(0) + idx.max(0)) / 2.0
    dist2 = ndimage.distance_transform_edt(mask[::2, ::2, ::2]).astype(np.float32) * 2.0
    return {
        "mask": mask.astype(np.float32),
        "gm": gm.astype(np.float32),
        "wm": wm.astype(np.float32),
        "origin": origin,
        "centre": centre,
        "bbox_lo": idx.min(0),
        "bbox_hi": idx.max(0),
        "dist2": dist2,
        "wm2": wm[::2, ::2, ::2].copy(),
    }


@lru_cache(maxsize=2)
def _prefiltered_anatomy(spacing: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Template ``(mask, gm, wm)`` low-pass filtered for sampling at ``spacing`` mm (anti-alias)."""
    tpl = _template()
    eff = np.array(spacing) / _BASE_SCALE
    sigma = 0.4 * np.sqrt(np.maximum(eff**2 - 1.0, 0.0))
    if np.all(sigma < 0.25):
        return tpl["mask"], tpl["gm"], tpl["wm"]
    return tuple(ndimage.gaussian_filter(tpl[k], sigma) for k in ("mask", "gm", "wm"))


def _sample(vol: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``vol`` at voxel coords ``vox`` ``(3, N)`` -> ``(N,)`` in [0, 1]."""
    out = ndimage.map_coordinates(vol, vox, order=1, mode="constant", cval=0.0, output=np.float32)
    return np.clip(out.ravel(), 0.0, 1.0)


def _linear_weights(pos: np.ndarray, n: int) -> np.ndarray:
    """Matrix ``(len(pos), n)`` of linear-interpolation weights at fractional indices ``pos``
    (clamped to the ends)."""
    pos = np.clip(pos, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    f = pos - i0
    w = np.zeros((len(pos), n), np.float32)
    rows = np.arange(len(pos))
    w[rows, i0] = 1.0 - f
    w[rows, i0 + 1] = f
    return w


# --------------------------------------------------------------------------- random fields


def _random_rotation(rng: np.random.Generator, max_deg: float | None = None) -> np.ndarray:
    """3x3 rotation: uniform if ``max_deg`` is None, else small Euler angles within +-max_deg."""
    if max_deg is None:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        return q
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _SmoothField:
    """Unit-variance smooth Gaussian random field on a cube of side ``2 * half`` mm at ``centre``.

    Sampling is trilinear, so the field is a function of physical position and looks the same
    whatever grid samples it.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        centre: np.ndarray,
        half: float,
        n: int = 24,
        sigma: float = 1.6,
    ) -> None:
        field = ndimage.gaussian_filter(rng.standard_normal((n, n, n)), sigma, mode="wrap")
        self.data = ((field - field.mean()) / field.std()).astype(np.float32)
        self.lo = np.asarray(centre, dtype=np.float64) - half
        self.step = 2.0 * half / (n - 1)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Field values at ``points`` ``(3, N)`` mm -> ``(N,)`` float32."""
        coords = (points - self.lo[:, None].astype(points.dtype)) / self.step
        return ndimage.map_coordinates(self.data, coords, order=1, mode="nearest")


@dataclass
class _Blob:
    """An irregular ellipsoid ``|Q^T (p - centre) / axes| / radius - 1 + amp * field(p) < 0``."""

    centre: np.ndarray
    radius: float
    axes: np.ndarray
    rot: np.ndarray
    field: _SmoothField
    amp: float

    def level(self, points: np.ndarray, radius_scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Level function at ``points`` ``(3, N)`` mm; negative inside."""
        d = self.rot.T @ (points - self.centre[:, None])
        rho = np.sqrt(np.sum((d / self.axes[:, None]) ** 2, axis=0))
        return rho / (self.radius * radius_scale) - 1.0 + self.amp * self.field(points)

    @property
    def extent(self) -> float:
        """Radius (mm) beyond which the blob is empty whatever the field does."""
        return self.radius * float(self.axes.max()) * (1.0 + 4.0 * self.amp) * 1.25


def _make_blob(
    rng: np.random.Generator, centre: np.ndarray, radius: float, amp: float, elong: float = 0.2
) -> _Blob:
    axes = rng.uniform(1.0 - elong, 1.0 + elong, 3)
    axes /= np.cbrt(np.prod(axes))
    rot = _random_rotation(rng)
    half = radius * float(axes.max()) * 1.6
    field = _SmoothField(rng, centre, half)
    return _Blob(np.asarray(centre, float), float(radius), axes, rot, field, float(amp))


def _pick_centre(
    rng: np.random.Generator, min_dist: float, wm_min: float, avoid=(), avoid_gap=()
) -> np.ndarray | None:
    """A template-space point (mm) in WM (prob > ``wm_min``) at least ``min_dist`` mm inside the
    brain and, for each ``avoid[j]``, at least ``avoid_gap[j]`` mm from it; None if impossible."""
    tpl = _template()
    for relax in (1.0, 0.8, 0.6, 0.4, 0.0):
        cand = np.argwhere((tpl["dist2"] >= min_dist * relax) & (tpl["wm2"] > wm_min * relax))
        if len(cand) == 0:
            continue
        pts = tpl["origin"] + cand * 2.0
        ok = np.ones(len(pts), bool)
        for a, gap in zip(avoid, avoid_gap):
            ok &= np.sum((pts - a) ** 2, axis=1) >= gap**2
        if ok.any():
            choice = pts[ok][rng.integers(int(ok.sum()))]
            return choice + rng.uniform(-1.0, 1.0, 3)
        if avoid:
            return None
    raise RuntimeError("no admissible tumour centre in the template")  # pragma: no cover


# --------------------------------------------------------------------------- generator


class PhantomGenerator:
    """Deterministic generator of four-contrast tumour phantoms.

    >>> gen = PhantomGenerator(PhantomConfig(shape=(48, 48, 48), mode="glioma", seed=0))
    >>> images, label, affine = gen.generate(7)   # (4,48,48,48) float32, (48,48,48) uint8, (4,4)
    """

    def __init__(self, config: PhantomConfig | None = None) -> None:
        self.config = config if config is not None else PhantomConfig()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid ``(D, H, W)`` in voxels."""
        return self.config.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) along (x, y, z)."""
        return grid_spacing(self.config.shape)

    @property
    def affine(self) -> np.ndarray:
        """RAS voxel->mm affine ``(4, 4)`` shared by all cases of this config."""
        return grid_affine(self.config.shape)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, int(index), stream])

    def generate(self, index: int) -> PhantomCase:
        """Generate case ``index`` (>= 0).

        Returns ``(images, label, affine)``: float32 ``(4, D, H, W)`` in order T1, T1ce, T2,
        FLAIR (arbitrary units, exactly 0 outside the brain), uint8 ``(D, H, W)`` labels
        (BraTS 2024 convention) and the ``(4, 4)`` RAS affine in mm.
        """
        return self._generate(index, want_tissue=False)[0]

    def generate_with_tissue(self, index: int) -> tuple[PhantomCase, np.ndarray]:
        """As :meth:`generate`, plus the dominant tissue class per voxel.

        The tissue map is uint8 ``(D, H, W)`` indexing :data:`TISSUES` (tumour labels first, else
        the largest of CSF/GM/WM inside the brain, else background); for diagnostics only.
        """
        case, tissue = self._generate(index, want_tissue=True)
        assert tissue is not None
        return case, tissue

    def _generate(self, index: int, want_tissue: bool) -> tuple[PhantomCase, np.ndarray | None]:
        if index < 0:
            raise ValueError("index must be >= 0")
        tpl = _template()
        shape = self.config.shape
        affine = self.affine
        points_t = self._template_coordinates(index, affine)  # (3, N) template mm

        # Anatomy: one interpolation per map with the combined coordinate map.
        vox = points_t - tpl["origin"][:, None].astype(np.float32)
        # Only voxels that land near the template brain need sampling (a third of a BraTS grid).
        near = np.ones(vox.shape[1], bool)
        for a in range(3):
            near &= (vox[a] >= tpl["bbox_lo"][a] - 2) & (vox[a] <= tpl["bbox_hi"][a] + 2)
        sel = np.flatnonzero(near)
        vox = vox[:, sel]
        mask_f, gm_f, wm_f = _prefiltered_anatomy(self.spacing)
        brain, gm, wm = (np.zeros(points_t.shape[1], np.float32) for _ in range(3))
        brain[sel] = _sample(mask_f, vox)
        gm[sel] = np.minimum(_sample(gm_f, vox), brain[sel])
        wm[sel] = np.minimum(_sample(wm_f, vox), brain[sel] - gm[sel])
        csf = np.clip(brain - gm - wm, 0.0, 1.0)
        inside = brain >= 0.5
        del vox, near, sel

        label = self._paint(index, points_t, wm, csf, inside)
        del points_t
        images = self._contrast(index, brain, gm, wm, csf, label, inside)
        tissue = None
        if want_tissue:
            normal = np.array([_CSF, _GM, _WM], np.uint8)[np.argmax(np.stack([csf, gm, wm]), 0)]
            by_label = np.array([_BG, _NETC, _OED, _ET, _CAV], np.uint8)[label]
            tissue = np.where(label > 0, by_label, np.where(inside, normal, _BG))
            tissue = tissue.astype(np.uint8).reshape(shape)
        return PhantomCase(images, label.reshape(shape), affine), tissue

    # ---------------------------------------------------------------- geometry

    def _template_coordinates(self, index: int, affine: np.ndarray) -> np.ndarray:
        """Template-space position (mm) of every output voxel, ``(3, D*H*W)`` float32.

        Composition of a smooth random displacement (in subject space), a small rotation,
        anisotropic scaling and translation about the brain centre.
        """
        rng = self._rng(index, _S_ANATOMY)
        shape = self.config.shape
        centre = _template()["centre"]
        rot = _random_rotation(rng, max_deg=7.0)
        scale = _BASE_SCALE * np.exp(rng.uniform(-0.05, 0.05)) * np.exp(rng.uniform(-0.03, 0.03, 3))
        shift = rng.uniform(-4.0, 4.0, 3)
        # Displacement field on a fixed 10 mm control lattice over the field of view.
        lattice = tuple(int(np.ceil(f / 10.0)) + 1 for f in BRATS_FOV_MM)
        disp = np.stack([ndimage.gaussian_filter(rng.standard_normal(lattice), 1.5) for _ in "xyz"])
        disp *= 3.0 / disp.std()  # about 3 mm rms

        world = [affine[a, a] * np.arange(n) + affine[a, 3] for a, n in enumerate(shape)]
        lo = centre - np.array(BRATS_FOV_MM) / 2.0
        # Trilinear interpolation of the lattice, done separably (the grids are axis-aligned).
        wx, wy, wz = (_linear_weights((world[a] - lo[a]) / 10.0, lattice[a]) for a in range(3))
        y = np.empty((3, *shape), np.float32)
        for a in range(3):
            t = np.einsum("ia,abc->ibc", wx, disp[a])
            t = np.einsum("jb,ibc->ijc", wy, t)
            u = (t.reshape(-1, lattice[2]) @ wz.T).reshape(shape)
            y[a] = u + world[a].reshape([-1 if b == a else 1 for b in range(3)])
        y = y.reshape(3, -1)
        y -= (centre + shift).astype(np.float32)[:, None]
        m = (rot.T / scale[:, None]).astype(np.float32)  # inverse of rot @ diag(scale)
        out = m @ y
        out += centre.astype(np.float32)[:, None]
        return out

    # ---------------------------------------------------------------- tumour

    def _paint(
        self, index: int, points: np.ndarray, wm: np.ndarray, csf: np.ndarray, inside: np.ndarray
    ) -> np.ndarray:
        """Label map ``(N,)`` uint8 from tumour fields evaluated at template points (mm)."""
        label = np.zeros(points.shape[1], np.uint8)
        # Oedema spreads along white matter and avoids CSF.
        spread = np.clip(0.55 + 0.6 * wm - 0.4 * csf, 0.3, 1.2)
        rng = self._rng(index, _S_TUMOUR)
        if self.config.mode == "mets":
            lesions = self._mets_lesions(rng)
        else:
            lesions = [self._glioma(rng)]
        for les in lesions:
            self._paint_lesion(label, points, spread, **les)
        if self.config.mode == "post-treatment":
            cav = self._cavity(self._rng(index, _S_CAVITY), lesions[0]["core"])
            sel = self._near(points, cav)
            if sel is not None:
                label[sel[cav.level(points[:, sel]) < 0]] = 4
        label[~inside] = 0
        return label

    @staticmethod
    def _near(points: np.ndarray, blob: _Blob) -> np.ndarray | None:
        """Indices of the points within the blob's extent (saves work on large grids)."""
        r = blob.extent
        d2 = np.zeros(points.shape[1], np.float32)
        for a in range(3):
            d2 += (points[a] - np.float32(blob.centre[a])) ** 2
        sel = np.flatnonzero(d2 <= r * r)
        return sel if sel.size else None

    def _glioma(self, rng: np.random.Generator) -> dict:
        r_oed = rng.uniform(23.0, 34.0)
        r_core = r_oed * rng.uniform(0.42, 0.65)
        enhancing = rng.random() >= GLIOMA_NO_ET_FRACTION
        rim = rng.uniform(0.3, 0.55)  # rim thickness as a fraction of the core radius
        centre = _pick_centre(rng, min_dist=r_core + 10.0, wm_min=0.6)
        les = self._lesion(rng, centre, r_core, r_oed, enhancing, rim, necrotic=enhancing)
        # Patchy enhancement: only where a smooth field exceeds a per-case threshold (38-88 % of
        # the rim); the rest of the rim is non-enhancing tumour (label 1), which looks like the
        # enhancing part except in T1ce, so ET cannot be inferred from the core's shape alone.
        les["patch"] = _SmoothField(rng, centre, r_core * 1.6)
        les["patch_threshold"] = float(rng.uniform(-1.2, 0.3))
        return les

    def _mets_lesions(self, rng: np.random.Generator) -> list[dict]:
        n = int(rng.integers(1, 6))
        out: list[dict] = []
        centres: list[np.ndarray] = []
        reach: list[float] = []
        for _ in range(n):
            r_core = rng.uniform(4.5, 11.0)
            r_oed = r_core * rng.uniform(1.6, 3.0)
            necrotic = rng.random() < 0.35
            rim = rng.uniform(0.45, 0.7)
            gaps = [r_oed * 1.4 + rr * 1.4 + 4.0 for rr in reach]
            centre = _pick_centre(rng, r_core + 6.0, 0.3, avoid=centres, avoid_gap=gaps)
            if centre is None:
                continue
            centres.append(centre)
            reach.append(r_oed)
            out.append(self._lesion(rng, centre, r_core, r_oed, True, rim, necrotic, amp=0.15))
        return out

    @staticmethod
    def _lesion(
        rng: np.random.Generator,
        centre: np.ndarray,
        r_core: float,
        r_oed: float,
        enhancing: bool,
        rim: float,
        necrotic: bool,
        amp: float = 0.3,
    ) -> dict:
        """Blobs of one lesion: core radius ``r_core`` mm, oedema ``r_oed`` mm, necrosis radius
        ``(1 - rim) * r_core`` when ``necrotic``."""
        core = _make_blob(rng, centre, r_core, amp)
        oed = _make_blob(rng, centre, r_oed, amp * 1.1, elong=0.25)
        necro = _make_blob(rng, centre, r_core * (1.0 - rim), amp) if necrotic else None
        return {"core": core, "oed": oed, "necro": necro, "enhancing": enhancing}

    @staticmethod
    def _paint_lesion(
        label: np.ndarray,
        points: np.ndarray,
        spread: np.ndarray,
        core: _Blob,
        oed: _Blob,
        necro: _Blob | None,
        enhancing: bool,
        patch: _SmoothField | None = None,
        patch_threshold: float = 0.0,
    ) -> None:
        """Write one lesion's labels into ``label`` ``(N,)`` in place (points ``(3, N)`` mm)."""
        sel = PhantomGenerator._near(points, oed)
        if sel is None:
            return
        p = points[:, sel]
        f_core = core.level(p)
        in_oed = (oed.level(p, spread[sel]) < 0) | (f_core < 0)
        in_core = f_core < 0
        lab = np.where(in_oed, 2, 0).astype(np.uint8)
        if enhancing:
            lab[in_core] = 3
            if patch is not None:
                lab[in_core & (patch(p) < patch_threshold)] = 1
            if necro is not None:
                # Keep a minimum rim everywhere so the compartments stay nested.
                lab[in_core & (necro.level(p) < 0) & (f_core < -0.15)] = 1
        else:
            lab[in_core] = 1
        cur = label[sel]
        label[sel] = np.where(lab > 0, lab, cur)

    @staticmethod
    def _cavity(rng: np.random.Generator, core: _Blob) -> _Blob:
        """Resection cavity abutting the tumour core, placed where it stays inside the brain."""
        tpl = _template()
        r_cav = core.radius * rng.uniform(0.6, 1.0)
        best, best_d = None, -np.inf
        for _ in range(8):
            u = rng.standard_normal(3)
            u /= np.linalg.norm(u)
            c = core.centre + u * (core.radius * 0.9)
            i = np.round((c - tpl["origin"]) / 2.0).astype(int)
            i = np.clip(i, 0, np.array(tpl["dist2"].shape) - 1)
            d = float(tpl["dist2"][tuple(i)])
            if d > best_d:
                best, best_d = c, d
        return _make_blob(rng, best, min(r_cav, max(best_d - 4.0, 4.0)), 0.15)

    # ---------------------------------------------------------------- contrast

    def _contrast(
        self,
        index: int,
        brain: np.ndarray,
        gm: np.ndarray,
        wm: np.ndarray,
        csf: np.ndarray,
        label: np.ndarray,
        inside: np.ndarray,
    ) -> np.ndarray:
        """Images ``(4, D, H, W)`` float32 from flat ``(N,)`` tissue fractions and labels."""
        shape = self.config.shape
        rng = self._rng(index, _S_CONTRAST)
        noise_rng = self._rng(index, _S_VOXEL_NOISE)
        lab_tissue = np.array([_BG, _NETC, _OED, _ET, _CAV], np.intp)[label]
        tumour = label > 0
        brain_idx = np.flatnonzero(inside)
        # Per-case bias field: exp of a random quadratic in normalised coordinates (about +-15%).
        u = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
        ux, uy, uz = u[0][:, None, None], u[1][None, :, None], u[2][None, None, :]
        images = np.empty((4, *shape), np.float32)
        for m in range(4):
            mu = CONTRAST_TABLE[m]
            img = gm * mu[_GM] + wm * mu[_WM] + csf * mu[_CSF]
            img[tumour] = mu[lab_tissue[tumour]] * brain[tumour]
            img = ndimage.gaussian_filter(img.reshape(shape), _PV_SIGMA_VOX, mode="constant")
            c = rng.normal(0.0, 1.0, 9) * np.array([0.07] * 3 + [0.04] * 3 + [0.04] * 3)
            lin = c[0] * ux + c[1] * uy + c[2] * uz
            quad = c[3] * ux * ux + c[4] * uy * uy + c[5] * uz * uz
            cross = c[6] * ux * uy + c[7] * uy * uz + c[8] * ux * uz
            bias = lin + quad + cross
            img *= np.exp(bias.astype(np.float32))
            scale = np.float32(_GLOBAL_INTENSITY * np.exp(rng.uniform(-0.3, 0.3)))
            # Rician noise: magnitude of the signal plus complex Gaussian noise (brain only; the
            # background is set to 0 as in skull-stripped data).
            signal = img.reshape(-1)[brain_idx]
            re = noise_rng.standard_normal(signal.shape, dtype=np.float32)
            re *= np.float32(_NOISE_SIGMA)
            re += signal
            im = noise_rng.standard_normal(signal.shape, dtype=np.float32)
            im *= np.float32(_NOISE_SIGMA)
            img = np.zeros(img.size, np.float32)
            img[brain_idx] = np.sqrt(re * re + im * im) * scale
            images[m] = img.reshape(shape)
        return images
