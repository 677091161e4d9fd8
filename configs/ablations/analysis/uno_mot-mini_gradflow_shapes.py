# The main UNO job with gradient-flow logging: every 50 iterations, per
# decoder layer, the norm of each objective's gradient on the gen expert
# and its cosine with the flow gradient (gradflow/... in MLflow and
# scalars.json); plot with tools/analysis/plot_gradient_flow.py WORK_DIR.
# Training is unchanged (bit-identical weights); each measurement costs
# about one extra training step.
_base_ = '../../uno/uno_mot-mini_1xb8-iter600_shapes.py'
custom_hooks = [
    dict(type='BenchmarkGridHook'),
    dict(type='GradientFlowHook', interval=50, layers='all'),
]
