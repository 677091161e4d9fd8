# Flow matching + metaquery regression to clean-image ViT features.
_base_ = ['./flow.py']
objectives = dict(
    regression=dict(
        type='VisualRegressionObjective',
        weight=0.5,
        loss='cosine',
        resample='pool',
        see_caption=False))
