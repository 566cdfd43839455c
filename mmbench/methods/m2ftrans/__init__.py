"""M2FTrans (Shi et al., IEEE JBHI 2023): importing this package registers the ``m2ftrans``
strategy and its official-code port."""

from mmbench.methods.m2ftrans.network import M2FTransDims, M2FTransNet
from mmbench.methods.m2ftrans.port import M2FTransPort
from mmbench.methods.m2ftrans.strategy import M2FTrans

__all__ = ["M2FTrans", "M2FTransDims", "M2FTransNet", "M2FTransPort"]
