"""RFNet (Ding et al., ICCV 2021): importing this package registers the ``rfnet`` strategy and
its official-code port."""

from mmbench.methods.rfnet.network import RFNetDims, RFNetNet
from mmbench.methods.rfnet.port import RFNetPort
from mmbench.methods.rfnet.strategy import RFNet

__all__ = ["RFNet", "RFNetDims", "RFNetNet", "RFNetPort"]
