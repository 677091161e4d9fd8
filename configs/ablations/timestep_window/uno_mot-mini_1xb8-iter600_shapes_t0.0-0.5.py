# Understanding losses only at low noise, t in [0, 0.5] (baseline: all t).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(
    caption=dict(timestep_window=(0.0, 0.5)),
    regression=dict(timestep_window=(0.0, 0.5)))
