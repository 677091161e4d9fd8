# A tiny MoT unified model for tests and CPU smoke runs (random init).
model = dict(
    type='UnoModel',
    llm=dict(
        vocab_size=128,  # WordTokenizer(vocab_size=128) of ShapesWorld
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        qkv_bias=True,
        qk_norm=False),
    latent_encoder=dict(type='PixelPatchifier', patch_size=4),
    attention=dict(type='sdpa'),
    metaquery=dict(num_queries=0),
    freeze=dict(latent_encoder=True))
