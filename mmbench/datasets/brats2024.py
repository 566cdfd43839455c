"""BraTS 2024 adult glioma, post-treatment (``brats2024``): labels {0, 1, 2, 3, 4}.

Folders ``BraTS-GLI-<patient>-<timepoint>/`` with ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, found
recursively (the release came as several archives). Label 4 is the resection cavity (RC): an
optional extra region, outside WT and TC. Splits group by patient, since patients have several
time points.
"""

from mmbench.datasets.base import DatasetSpec

BRATS2024_SUFFIXES: dict[str, str] = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f"}

SPEC = DatasetSpec(
    name="brats2024",
    description="BraTS 2024 post-treatment gliomas, labels 1 NETC, 2 SNFH, 3 ET, 4 RC",
    modality_suffixes=BRATS2024_SUFFIXES,
    label_suffix="seg",
    label_values=(0, 1, 2, 3, 4),
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "RC": (4,)},
    extra_regions=("RC",),
    compartments={"NETC": 1, "ED": 2, "ET": 3},
    group_key="patient",
    stratify_key=None,
    case_pattern=r"BraTS-GLI-\d{5}-\d{3}",
    separator="-",
    patient_pattern=r"(BraTS-GLI-\d{5})-\d{3}",
)
