# Flow matching + REPA-style alignment of layer-1 gen states to the frozen
# ViT's features, post-training the shipped pretrained mini model: the SFT
# baseline plus one proxy objective, compared with the main UNO config
# (same model, frozen set, data, steps, batch and learning rate).
_base_ = '../../../configs/sft/sft_mot-mini_1xb8-iter600_shapes.py'
custom_imports = dict(
    imports=['projects.repa_align.repa_align'], allow_failed_imports=False)
objectives = dict(
    repa=dict(type='RepaAlignmentObjective', weight=0.5, layer=1))
