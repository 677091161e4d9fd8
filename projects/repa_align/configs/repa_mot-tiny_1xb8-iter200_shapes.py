# Flow matching + REPA-style alignment of layer-1 gen states to ViT
# features: the SFT baseline plus one proxy objective, for comparison with
# configs/uno/ (same model, data, steps, batch and learning rate).
_base_ = '../../../configs/sft/sft_mot-tiny_1xb8-iter200_shapes.py'
custom_imports = dict(
    imports=['projects.repa_align.repa_align'], allow_failed_imports=False)
objectives = dict(
    repa=dict(type='RepaAlignmentObjective', weight=0.5, layer=1))
