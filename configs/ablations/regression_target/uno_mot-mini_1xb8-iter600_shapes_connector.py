# Regression target after the connector (the embeddings the und expert
# reads) instead of the understanding encoder's features (baseline).
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
objectives = dict(regression=dict(target_space='connector'))
