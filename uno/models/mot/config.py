"""Shape and numerics of a Mixture-of-Transformers decoder."""
from dataclasses import asdict, dataclass, fields
from typing import Optional

from uno.errors import UnoConfigError
from uno.utils.config_check import check_keys


@dataclass
class MoTConfig:
    """Hyper-parameters of the MoT decoder (Qwen2/Llama family).

    Args:
        vocab_size (int): Text vocabulary size (embeddings and lm_head).
        hidden_size (int): Model width ``D``.
        num_layers (int): Decoder layers.
        num_heads (int): Query heads ``H``.
        num_kv_heads (int, optional): Key/value heads (GQA); None means
            ``num_heads``. Defaults to None.
        head_dim (int, optional): Per-head width; None means
            ``hidden_size // num_heads``. Defaults to None.
        intermediate_size (int): SwiGLU inner width.
        rope_theta (float): RoPE base. Defaults to 10000.0.
        rms_norm_eps (float): RMSNorm epsilon. Defaults to 1e-6.
        qkv_bias (bool): Bias on q/k/v projections (Qwen2: True, Llama:
            False). Defaults to True.
        qk_norm (bool): Per-expert RMSNorm on q and k over ``head_dim``
            (BAGEL, Qwen3). Defaults to False.
        tie_word_embeddings (bool): Share lm_head and embeddings. Defaults
            to False.
        activation_checkpointing (bool): Recompute each layer in backward
            to save memory. Defaults to False.
    """
    vocab_size: int = 128
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: Optional[int] = None
    head_dim: Optional[int] = None
    intermediate_size: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    qkv_bias: bool = True
    qk_norm: bool = False
    tie_word_embeddings: bool = False
    activation_checkpointing: bool = False

    def __post_init__(self):
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise UnoConfigError(
                    f'model.llm.hidden_size={self.hidden_size} is not '
                    f'divisible by num_heads={self.num_heads}')
            self.head_dim = self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise UnoConfigError(
                f'model.llm.num_heads={self.num_heads} is not a multiple '
                f'of num_kv_heads={self.num_kv_heads}')

    @classmethod
    def from_dict(cls, cfg: dict) -> 'MoTConfig':
        """Build from a config dict; an unknown key names close matches."""
        check_keys(cfg, [f.name for f in fields(cls)], prefix='model.llm.')
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)
