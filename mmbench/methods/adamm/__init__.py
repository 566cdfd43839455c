"""AdaMM (knowledge distillation with subset adapters, GARM, BBDM, LGRM), its ablations, and
SMU-Net. Importing this package registers ``adamm``, ``adamm-no-garm``, ``adamm-no-bbdm``,
``adamm-no-lgrm`` and ``smunet``.
"""

from mmbench.methods.adamm.smunet import SMUNet
from mmbench.methods.adamm.strategy import (
    AdaMM,
    AdaMMNoBBDM,
    AdaMMNoGARM,
    AdaMMNoLGRM,
    TeacherStudentKD,
)

__all__ = ["AdaMM", "AdaMMNoBBDM", "AdaMMNoGARM", "AdaMMNoLGRM", "SMUNet", "TeacherStudentKD"]
