# The tiny MoT with an understanding encoder (a tiny timm ViT) and K = 16
# metaqueries: the model UNO post-trains on the CPU world. The
# understanding side (und expert, ViT, connector, embeddings, lm_head) is
# frozen by requires_grad=False; activations stay differentiable.
_base_ = ['./mot_tiny.py']
model = dict(
    und_encoder=dict(
        type='TimmViTEncoder',
        config=dict(
            img_size=32, patch_size=4, embed_dim=64, depth=2, num_heads=4)),
    metaquery=dict(num_queries=16),
    freeze=dict(
        und=True,
        embed_tokens=True,
        lm_head=True,
        und_encoder=True,
        connector=True,
        latent_encoder=True))
