# The mini unified model pretrained on the CPU world (the checkpoint that
# ships with the repository): width 128, 4 layers, a small ViT as the
# understanding encoder, 4x4-pixel patches as latents, 16 metaqueries
# (trained by UNO only). Nothing is frozen but the patchifier.
model = dict(
    type='UnoModel',
    llm=dict(
        vocab_size=128,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=384,
        qkv_bias=True,
        qk_norm=True),
    latent_encoder=dict(type='PixelPatchifier', patch_size=4),
    und_encoder=dict(
        type='TimmViTEncoder',
        config=dict(
            img_size=32, patch_size=4, embed_dim=96, depth=3, num_heads=4)),
    attention=dict(type='sdpa'),
    metaquery=dict(num_queries=16),
    freeze=dict(und_encoder=False, latent_encoder=True))
