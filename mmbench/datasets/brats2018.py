"""BraTS 2018 (``brats2018``): 285 graded gliomas, labels {0, 1, 2, 4}.

Layout ``<root>/{HGG,LGG}/<ID>/<ID>_{t1,t1ce,t2,flair,seg}.nii[.gz]``; a flattened mirror without
the grade folders is accepted (grade unknown).
"""

from mmbench.datasets.base import DatasetSpec

SPEC = DatasetSpec(
    name="brats2018",
    description="BraTS 2018 gliomas (HGG/LGG), labels 1 NCR/NET, 2 ED, 4 ET",
    modality_suffixes={"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair"},
    label_suffix="seg",
    label_values=(0, 1, 2, 4),
    regions={"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    compartments={"NETC": 1, "ED": 2, "ET": 4},
    group_key="case",
    stratify_key="grade",
    case_pattern=r"(?i:brats18)_[A-Za-z0-9_]+",
    separator="_",
)

GRADE_FOLDERS: tuple[str, ...] = ("HGG", "LGG")
