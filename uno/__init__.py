"""uno: Understanding-Oriented Post-Training of unified multimodal models.

A config-driven framework (MMEngine registry and configs at the boundaries,
plain PyTorch inside) for post-training BAGEL-style Mixture-of-Transformers
models with flow matching plus understanding objectives (captioning and
metaquery visual regression) read by a frozen understanding expert from the
noisy generation tokens.
"""
from .version import __version__

__all__ = ['__version__']
