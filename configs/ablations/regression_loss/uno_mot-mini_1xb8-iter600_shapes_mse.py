# Regression loss 'mse' (baseline 'cosine').
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(regression=dict(loss='mse'))
