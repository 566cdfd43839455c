"""SMU-Net (Azad et al., "SMU-Net: Style matching U-Net for brain tumor segmentation with missing
modalities", MIDL 2022) as the simpler knowledge-distillation baseline.

In effect AdaMM without adapters, GARM, global style matching and LGRM: the same SMU-Net-style
U-Net for teacher (all modalities) and student (absent channels zero), co-trained with one Adam;
losses 0.4·Dice(T) + 0.6·Dice(S) + ramped prediction consistency + 0.2·content MSE + 1e-4·style
Gram + 2e-4·adversarial (style discriminator with its own persistent Adam). Departures from the
SMU-Net paper: AdaMM's backbone, loss weights and schedule are used (so that the comparison with
AdaMM isolates AdaMM's additions), the discriminator pools globally, and the student receives
the zero-filled four-channel volume rather than a per-subset network. ``variant`` has no effect
except ``fresh_disc_adam`` (default off).
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

    Built on AdaMM's backbone and loss weights; see :mod:`mmbench.methods.adamm.smunet`.
    """

    use_adapters = False
    use_garm = False
    use_gsm = False
    use_lgrm = False

    def __init__(self, config):  # type: ignore[no-untyped-def]
        super().__init__(config)
        # Only AdaMM's defects differ between variants; SMU-Net keeps a persistent Adam.
        self.fresh_disc_adam = bool(config.option("fresh_disc_adam", False))
