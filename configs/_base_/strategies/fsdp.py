# FSDP2 (torch fully_shard): weights, gradients and optimizer state are
# sharded over the ranks; each decoder layer (frozen und + trainable gen
# expert), encoder block and the connector is one unit
# (UnoModel.fsdp_wrap_modules). Checkpoints are sharded folders
# (iter_N.pth/, one file per rank); tools/misc/export_weights.py turns one
# into a safetensors file. Launch with tools/dist_train.sh.
model_wrapper_cfg = dict(
    type='uno.UnoFSDP',  # uno's scope: found by the config check
    reshard_after_forward=True,  # False: faster, gathered weights kept
    param_dtype=None,  # 'bfloat16' on CUDA: bf16 compute, fp32 shards
    reduce_dtype=None,  # 'float32' with bf16 compute
    shard_size=None,  # HSDP: shard within groups of N ranks (a node)
    cpu_offload=False,
    eval_unshard=True)  # gather once for validation / benchmarks
