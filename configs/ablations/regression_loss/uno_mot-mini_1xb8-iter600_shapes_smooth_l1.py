# Regression loss 'smooth_l1' (baseline 'cosine').
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(regression=dict(loss='smooth_l1'))
