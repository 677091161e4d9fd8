# RecA on the tiny model (tests, CPU smoke scale): the flow-only SFT tiny
# config with the training data replaced by a mixture of text-to-image and
# RecA samples [ViT tokens of the clean image, noisy latents of the same
# image]; same model, frozen set, steps, batch and learning rate.
_base_ = '../../../configs/sft/sft_mot-tiny_1xb8-iter200_shapes.py'
custom_imports = dict(
    imports=['projects.reca.reca'], allow_failed_imports=False)
_tok = dict(type='WordTokenizer', vocab_size=128)
train_dataloader = dict(
    collate_fn=dict(vit_stride=4),  # the tiny ViT's patch size
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
                tokenizer=_tok))))
