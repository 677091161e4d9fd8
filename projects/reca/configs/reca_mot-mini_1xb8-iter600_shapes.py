# RecA (reconstruction alignment) post-training of the shipped pretrained
# mini model: the flow-only SFT config (same model, frozen set incl. the
# ViT, flow objective, steps, batch, learning rate and load_from) with the
# training data replaced by a mixture of the usual text-to-image samples
# and RecA samples [ViT tokens of the clean image, noisy latents of the
# same image] (projects/reca/README.md).
_base_ = '../../../configs/sft/sft_mot-mini_1xb8-iter600_shapes.py'
custom_imports = dict(
    imports=['projects.reca.reca'], allow_failed_imports=False)
_tok = dict(type='WordTokenizer', vocab_size=128)
train_dataloader = dict(
    # RecA plans hold ViT segments: 4-pixel ViT patches (the model's
    # und_encoder.config.patch_size)
    collate_fn=dict(vit_stride=4),
    dataset=dict(
        _delete_=True,
        type='MixtureDataset',
        num_samples=100000,
        seed=0,
        weights=dict(t2i=0.5, reca=0.5),
        datasets=dict(
            t2i=dict(
                type='ShapesWorldT2IDataset',
                split='train',
                num_samples=100000,
                image_size=32,
                seed=0,
                prompt_dropout=0.1,
                tokenizer=_tok),
            reca=dict(
                type='ShapesWorldRecADataset',
                split='train',
                num_samples=100000,
                image_size=32,
                seed=0,
                condition_dropout=0.0,
                tokenizer=_tok))))
