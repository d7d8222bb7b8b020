"""selfvae: self-supervised variational auto-encoders in PyTorch."""

__version__ = "0.1.0"
