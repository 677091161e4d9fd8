# Regression loss 'smooth_l1' (baseline 'cosine').
_base_ = '../../uno/uno_mot-tiny_1xb8-iter200_shapes.py'
objectives = dict(regression=dict(loss='smooth_l1'))
