"""Core records of the data path: dataset description, case, problem and the errors.

A :class:`DatasetSpec` says how a dataset is laid out on disk and what its labels mean; the
loaders, validators, splitters and transforms read everything dataset-specific from it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from mmbench.errors import DataRootError, DataValidationError
from mmbench.regions import COMPARTMENTS, REGIONS
from mmbench.subsets import MODALITIES

__all__ = [
    "COMPARTMENTS",
    "REGIONS",
    "Case",
    "DataRootError",
    "DataValidationError",
    "DatasetSpec",
    "Problem",
]


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset is stored and labelled.

    Attributes:
        name: registry name, e.g. ``"brats2024"``.
        description: one line for listings.
        modality_suffixes: canonical modality (``T1``, ``T1ce``, ``T2``, ``FLAIR``) → file suffix,
            e.g. ``{"T1": "t1n", ...}``; a file is ``<case><separator><suffix>.nii[.gz]``.
        label_suffix: file suffix of the label map (``"seg"``).
        label_values: every value the label map may hold (0 included).
        regions: evaluation region → label values it unites; WT, TC, ET first.
        extra_regions: names in ``regions`` that are optional extras (not reported by default).
        compartments: canonical disjoint compartment (NETC, ED, ET) → label value.
        group_key: ``"patient"`` to group time points of one patient, ``"case"`` otherwise.
        stratify_key: ``"grade"`` to stratify splits by grade, or ``None``.
        case_pattern: regular expression a case id must match in full.
        separator: character between case id and suffix in file names.
        patient_pattern: with ``group_key="patient"``, a regex whose first group is the patient id.
    """

    name: str
    description: str
    modality_suffixes: dict[str, str]
    label_suffix: str
    label_values: tuple[int, ...]
    regions: dict[str, tuple[int, ...]]
    compartments: dict[str, int]
    group_key: str = "case"
    stratify_key: str | None = None
    case_pattern: str = r".+"
    extra_regions: tuple[str, ...] = ()
    separator: str = "-"
    patient_pattern: str | None = None

    def __post_init__(self) -> None:
        if tuple(self.modality_suffixes) != MODALITIES:
            raise ValueError(f"modality_suffixes must be keyed {MODALITIES} in that order")
        if set(self.compartments) != set(COMPARTMENTS):
            raise ValueError(f"compartments must map exactly {COMPARTMENTS}")
        for region in (*REGIONS, *self.extra_regions):
            if region not in self.regions:
                raise ValueError(f"region {region!r} missing from regions of {self.name!r}")

    def __hash__(self) -> int:
        # The dict fields make the generated hash fail; names are unique in the registry.
        return hash(self.name)

    @property
    def default_regions(self) -> tuple[str, ...]:
        """Regions reported by default (WT, TC, ET)."""
        return tuple(r for r in self.regions if r not in self.extra_regions)

    @property
    def file_suffixes(self) -> tuple[str, ...]:
        """Suffixes of the four sequences in canonical order, then the label suffix."""
        return (*self.modality_suffixes.values(), self.label_suffix)

    def matches_case(self, case_id: str) -> bool:
        return re.fullmatch(self.case_pattern, case_id) is not None

    def group_of(self, case_id: str) -> str:
        """Split group of a case: its patient id, or the case id itself."""
        if self.group_key == "patient" and self.patient_pattern:
            m = re.match(self.patient_pattern, case_id)
            if m:
                return m.group(1)
        return case_id


@dataclass
class Case:
    """One discovered case.

    Attributes:
        id: case id, e.g. ``"BraTS-GLI-00005-101"``.
        images: canonical modality → NIfTI path, in canonical order.
        label: label map path.
        group: split group (patient id or case id).
        grade: ``"HGG"``/``"LGG"`` for BraTS 2018 with graded folders, else ``None``.
    """

    id: str
    images: dict[str, Path]
    label: Path
    group: str
    grade: str | None = None

    @property
    def files(self) -> list[Path]:
        """The four sequence paths in canonical order, then the label path."""
        return [*(self.images[m] for m in MODALITIES), self.label]

    def as_item(self) -> dict:
        """The data dict the transforms take: ``{"id", "image": [4 paths], "label",
        "label_path"}`` (``label_path`` stays a path after ``label`` is loaded)."""
        return {
            "id": self.id,
            "image": [str(self.images[m]) for m in MODALITIES],
            "label": str(self.label),
            "label_path": str(self.label),
        }


@dataclass
class Problem:
    """Why one case (or one file of it) cannot be used."""

    case: str
    file: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.case}: {self.file}: {self.problem}"
