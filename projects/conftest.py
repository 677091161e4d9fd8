"""Projects' tests share the core test fixtures."""
from tests.conftest import (  # noqa: F401
    _reset_mmengine_singletons, tiny_model_cfg, tokenizer, uno_model_cfg)
