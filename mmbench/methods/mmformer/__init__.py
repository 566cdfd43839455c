"""mmFormer (Zhang et al., MICCAI 2022): importing this package registers the ``mmformer``
strategy and its official-code port."""

from mmbench.methods.mmformer.network import MMFormerDims, MMFormerNet
from mmbench.methods.mmformer.port import MMFormerPort
from mmbench.methods.mmformer.strategy import MMFormer

__all__ = ["MMFormer", "MMFormerDims", "MMFormerNet", "MMFormerPort"]
