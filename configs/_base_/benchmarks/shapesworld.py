# ShapesWorld benchmarks run by tools/test.py: GenEval-schema generation
# (6 tags), editing (recolor/add/remove/move) and understanding
# (captioning), on the test split; grids of the outputs go to
# <work_dir>/grids and to MLflow. Sized to resolve a 0.03 difference:
# 96 prompts per tag (576 images; one image moves GenEval overall by
# 0.0017), 128 edit pairs, 256 captioned scenes, each metric with its 95%
# bootstrap interval.
# batch 4: the sampler packs a batch (x2 for CFG) into one sequence, so
# attention cost grows with the batch squared (batch 16 took 1.9x longer)
test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='list_collate'),
    dataset=dict(
        type='ShapesWorldBenchmark',
        tasks=dict(
            geneval=dict(n_per_tag=96),
            edit=dict(num_samples=128),
            caption=dict(num_samples=256)),
        image_size=32,
        seed=0,
        tokenizer=dict(type='WordTokenizer', vocab_size=128)))
test_evaluator = [
    dict(type='GenEvalMetric'),
    dict(type='EditMetric'),
    dict(type='UnderstandingMetric'),
]
benchmark = dict(
    sampler=dict(num_steps=25, shift=3.0, cfg_scale=4.0),
    captioner=dict(max_new_tokens=24))
custom_hooks = [dict(type='BenchmarkGridHook')]
