# Runtime defaults shared by every uno config.
default_scope = 'uno'  # resolve registry names in uno's registries first

default_hooks = dict(
    timer=dict(type='IterTimerHook'),  # iteration and data time
    logger=dict(type='LoggerHook', interval=10),  # console + vis backends
    param_scheduler=dict(type='ParamSchedulerHook'),
    # saves atomically; rotation removes old files only after the new one
    # is complete, so max_keep_ckpts=1 survives a kill mid-save
    checkpoint=dict(
        type='UnoCheckpointHook',
        by_epoch=False,
        interval=100,
        max_keep_ckpts=3,
        save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # skip NaN/inf steps; stop with a checkpoint after 5 in a row
    nonfinite_guard=dict(type='NonFiniteGuardHook', max_consecutive=5))

# the dist backend (gloo on CPU, nccl on CUDA) is chosen by build_runner
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0))

# local JSON log in the work dir + MLflow (sqlite store under work_dirs/)
visualizer = dict(
    type='Visualizer',
    vis_backends=[
        dict(type='LocalVisBackend'),
        dict(type='UnoMLflowVisBackend')
    ])

log_processor = dict(by_epoch=False, window_size=10)
log_level = 'INFO'
load_from = None  # a checkpoint to initialise from (weights only)
resume = False  # True: continue from the work dir's latest checkpoint
randomness = dict(seed=0, deterministic=False)
