# ShapesWorld text-to-image: [prompt (und, causal), noisy image (gen)].
tokenizer = dict(type='WordTokenizer', vocab_size=128)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pack_sequences', latent_stride=4),
    dataset=dict(
        type='ShapesWorldT2IDataset',
        split='train',
        num_samples=100000,
        image_size=32,
        seed=0,
        prompt_dropout=0.1,
        tokenizer=tokenizer))
val_dataloader = dict(
    batch_size=16,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pack_sequences', latent_stride=4),
    dataset=dict(
        type='ShapesWorldT2IDataset',
        split='test',
        num_samples=64,
        image_size=32,
        seed=0,
        prompt_dropout=0.0,
        tokenizer=tokenizer))
val_evaluator = dict(type='ObjectiveLossMetric')
