# ShapesWorld post-training data as the paper uses it: text-to-image pairs
# and editing triples (source latents + source ViT tokens + instruction ->
# noisy target). UNO's caption and metaquery segments follow the noisy
# image of both kinds (for edits: of the *target*), derived from the
# objectives by build_runner. Validation: held-out text-to-image flow loss.
_base_ = ['./shapesworld_t2i.py']
tokenizer = dict(type='WordTokenizer', vocab_size=128)
train_dataloader = dict(
    collate_fn=dict(type='pack_sequences', latent_stride=4, vit_stride=4),
    dataset=dict(
        _delete_=True,
        type='MixtureDataset',
        num_samples=100000,
        seed=0,
        weights=dict(t2i=0.6, edit=0.4),
        datasets=dict(
            t2i=dict(
                type='ShapesWorldT2IDataset',
                split='train',
                num_samples=100000,
                image_size=32,
                seed=0,
                prompt_dropout=0.1,
                tokenizer=tokenizer),
            edit=dict(
                type='ShapesWorldEditDataset',
                split='train',
                num_samples=100000,
                image_size=32,
                seed=0,
                instruction_dropout=0.1,
                tokenizer=tokenizer))))
