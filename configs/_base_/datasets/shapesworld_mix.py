# ShapesWorld pretraining mixture: text-to-image, image-to-caption (ViT
# view, and a quarter read from clean latents so the und expert learns to
# read generation tokens) and editing. All 32 px, one packed sequence per
# batch.
_tok = dict(type='WordTokenizer', vocab_size=128)
tokenizer = _tok
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pack_sequences', latent_stride=4, vit_stride=4),
    dataset=dict(
        type='MixtureDataset',
        num_samples=1000000,
        seed=0,
        weights=dict(t2i=0.5, caption=0.3, edit=0.2),
        datasets=dict(
            t2i=dict(
                type='ShapesWorldT2IDataset',
                num_samples=1000000,
                text='prompt',
                prompt_dropout=0.1,
                tokenizer=_tok),
            caption=dict(
                type='ShapesWorldCaptionDataset',
                num_samples=1000000,
                latent_fraction=0.25,
                tokenizer=_tok),
            edit=dict(
                type='ShapesWorldEditDataset',
                num_samples=1000000,
                instruction_dropout=0.1,
                tokenizer=_tok))))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pack_sequences', latent_stride=4, vit_stride=4),
    dataset=dict(
        type='ShapesWorldT2IDataset',
        split='test',
        num_samples=128,
        prompt_dropout=0.0,
        tokenizer=_tok))
val_evaluator = dict(type='ObjectiveLossMetric')
