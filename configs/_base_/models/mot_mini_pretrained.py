# The mini unified model as post-trained from the checkpoint that ships
# with the repository (leaf configs set load_from = PRETRAINED, see
# checkpoints/README.md), with the understanding side frozen as UNO requires: und expert, ViT,
# connector, embeddings and lm_head get requires_grad=False (their
# activations stay differentiable, so understanding losses reach the gen
# expert through attention). Trainable: the gen expert, the metaqueries and
# the objectives' heads.
_base_ = ['./mot_mini.py']
model = dict(
    freeze=dict(
        und=True,
        embed_tokens=True,
        lm_head=True,
        und_encoder=True,
        connector=True,
        latent_encoder=True))
