"""AdaMM (knowledge distillation with subset adapters, GARM, BBDM, LGRM), its ablations, and
SMU-Net. Importing this package registers ``adamm``, ``adamm-no-garm``, ``adamm-no-bbdm``,
``adamm-no-lgrm`` and ``smunet``, and the official-code port of ``adamm``.
"""

from mmbench.methods.adamm.official import AdaMMPort
from mmbench.methods.adamm.smunet import SMUNet
from mmbench.methods.adamm.strategy import (
    AdaMM,
    AdaMMBase,
    AdaMMNoBBDM,
    AdaMMNoGARM,
    AdaMMNoLGRM,
    TeacherStudentKD,
)

__all__ = [
    "AdaMM",
    "AdaMMBase",
    "AdaMMNoBBDM",
    "AdaMMNoGARM",
    "AdaMMNoLGRM",
    "AdaMMPort",
    "SMUNet",
    "TeacherStudentKD",
]
