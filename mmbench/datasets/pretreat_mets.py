"""Pretreat-MetsToBrain-Masks (``pretreat-mets``): 200 pre-treatment metastasis cases.

TCIA collection (Yale), DOI 10.7937/6be1-r748. Folders ``BraTS-MET-<5 digits>-000/`` with
``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``; the clinical spreadsheet beside them is ignored.
Labels {0, 1, 2, 3} in the BraTS-METS convention; regions as BraTS 2024 without RC.
"""

from mmbench.datasets.base import DatasetSpec
from mmbench.datasets.brats2024 import BRATS2024_SUFFIXES

SPEC = DatasetSpec(
    name="pretreat-mets",
    description="Pretreat-MetsToBrain-Masks brain metastases, labels 1 NETC, 2 SNFH, 3 ET",
    modality_suffixes=dict(BRATS2024_SUFFIXES),
    label_suffix="seg",
    label_values=(0, 1, 2, 3),
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
    compartments={"NETC": 1, "ED": 2, "ET": 3},
    group_key="case",
    stratify_key=None,
    case_pattern=r"BraTS-MET-\d{5}-\d{3}",
    separator="-",
)
