# Flow matching only (plain generation SFT).
objectives = dict(
    flow=dict(
        type='FlowMatchingObjective',
        weight=1.0,
        timestep_sampler='logit_normal',
        shift=1.0))
