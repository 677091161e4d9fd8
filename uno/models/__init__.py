"""Models: the MoT decoder, encoders, attention backends, UnoModel."""
from . import attention, encoders
from .metaquery import MetaQueryTokens
from .mot import MoTConfig, MoTDecoder
from .outputs import ModelOutputs
from .unified_model import UnoModel

__all__ = [
    'UnoModel', 'ModelOutputs', 'MetaQueryTokens', 'MoTConfig', 'MoTDecoder',
    'attention', 'encoders'
]
