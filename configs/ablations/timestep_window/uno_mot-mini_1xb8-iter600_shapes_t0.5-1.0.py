# Understanding losses only at high noise, t in [0.5, 1] (baseline: all t).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(
    caption=dict(timestep_window=(0.5, 1.0)),
    regression=dict(timestep_window=(0.5, 1.0)))
