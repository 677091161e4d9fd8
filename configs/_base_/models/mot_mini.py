# The mini unified model pretrained on the CPU world (the checkpoint that
# ships with the repository): width 128, 4 layers, a small ViT with a
# convolutional stem as the understanding encoder, 4x4-pixel patches as
# latents embedded by vae2llm plus a convolution over their grid, 16
# metaqueries (trained by UNO only). Nothing is frozen but the patchifier.
# Why the two stems: docs/testbed.md.
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
            img_size=32, patch_size=4, embed_dim=96, depth=3, num_heads=4),
        conv_stem=[32, 64, 96]),
    latent_stem=dict(channels=[128, 128]),
    attention=dict(type='sdpa'),
    metaquery=dict(num_queries=16),
    freeze=dict(und_encoder=False, latent_encoder=True))
