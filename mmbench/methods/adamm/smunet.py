"""SMU-Net (Azad et al., "SMU-Net: Style matching U-Net for brain tumor segmentation with missing
modalities", MIDL 2022) as the simpler knowledge-distillation baseline.

Built as AdaMM's released backbone without adapters, GARM, global style matching and LGRM: the
same teacher (all modalities) and student (absent channels zero) U-Nets co-trained with one Adam;
losses 0.4·Dice(T) + 0.6·Dice(S) (unweighted, per sample) + λ(e)·prediction consistency +
0.2·content MSE + the released style-Gram loss + 2e-4·adversarial (the released style
discriminator with its own Adam) — the released ``unet_Co_loss_wo_LPGM`` plus the adversarial
term. Departures from the SMU-Net paper: AdaMM's backbone, loss weights and schedule (so that
the comparison isolates AdaMM's additions), and the student reads the zero-filled four-channel
volume rather than a per-subset network. ``variant`` switches the two released defects that
apply here (``fix_disc_adam``, ``fix_eval_mode``).
"""

from __future__ import annotations

from mmbench.methods.adamm.strategy import TeacherStudentKD
from mmbench.methods.registry import register


@register(
    "smunet",
    family="knowledge-distillation",
    paper="Azad et al., SMU-Net: Style matching U-Net for brain tumor segmentation with missing "
    "modalities, MIDL 2022",
    tags=("teacher-student", "baseline"),
)
class SMUNet(TeacherStudentKD):
    """SMU-Net: teacher–student KD with content MSE, style Gram, style discriminator and
    prediction consistency (no adapters, GARM, global style matching or LGRM).

    Built on AdaMM's released backbone and loss weights; see
    :mod:`mmbench.methods.adamm.smunet`.
    """
