"""devicefit: fit neural networks to devices (hardware-aware NAS and automated compression)."""

__version__ = "0.1.0"
