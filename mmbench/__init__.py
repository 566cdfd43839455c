"""mmbench: brain-tumour segmentation benchmarks under missing MRI modalities."""

__version__ = "0.1.0"
