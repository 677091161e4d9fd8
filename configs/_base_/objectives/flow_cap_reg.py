# UNO: flow matching + captioning + metaquery regression. The
# understanding losses use the same noisy sample and timestep as the flow
# loss; set timestep_window=(lo, hi) on them to restrict where they apply.
_base_ = ['./flow_cap.py']
objectives = dict(
    regression=dict(
        type='VisualRegressionObjective',
        weight=0.5,
        loss='cosine',
        resample='pool',
        see_caption=False))
