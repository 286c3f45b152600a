"""synthsat: mask-conditional synthetic satellite imagery."""

__version__ = "0.1.0"
