"""ShaSpec (Wang et al., CVPR 2023): importing this package registers the ``shaspec`` strategy
and its official-code port."""

from mmbench.methods.shaspec.network import ShaSpecDims, ShaSpecNet
from mmbench.methods.shaspec.port import ShaSpecPort
from mmbench.methods.shaspec.strategy import ShaSpec

__all__ = ["ShaSpec", "ShaSpecDims", "ShaSpecNet", "ShaSpecPort"]
