"""ShapesWorld caption / edit / T2I plans and the mixture."""
import collections

import pytest
import torch

from uno.datasets import (MixtureDataset, ShapesWorldCaptionDataset,
                          ShapesWorldEditDataset, ShapesWorldT2IDataset,
                          pack_sequences)

UNO = dict(caption=True, num_queries=4)


def test_caption_plan_views():
    ds = ShapesWorldCaptionDataset(num_samples=50, latent_fraction=0.5)
    kinds = collections.Counter(ds[i].segments[0].kind for i in range(50))
    assert set(kinds) == {'vit', 'clean_latent'}
    plan = ds[0]
    assert plan.segments[-1].kind == 'caption' and plan.segments[-1].loss
    assert ds.tokenizer.decode(plan.segments[-1].tokens).strip('. ') in \
        [c.strip('. ') for c in ds.world.captions(plan.meta['scene'])]


def test_edit_plan_order_and_uno_target():
    ds = ShapesWorldEditDataset(num_samples=8, uno=UNO)
    plan = ds[0]
    assert [s.kind for s in plan.segments] == [
        'clean_latent', 'vit', 'text', 'noisy_latent', 'caption',
        'metaquery'
    ]
    noisy = 3
    assert plan.segments[4].sees == (noisy, )
    assert plan.segments[5].sees == (noisy, )
    assert plan.segments[5].target_image == 1  # the target, not the source
    assert not torch.equal(plan.images[0], plan.images[1])
    plain = ShapesWorldEditDataset(num_samples=8, vit=False)[0]
    assert [s.kind for s in plain.segments] == [
        'clean_latent', 'text', 'noisy_latent']


def test_t2i_uno_segments_and_determinism():
    ds = ShapesWorldT2IDataset(num_samples=4, uno=UNO, prompt_dropout=0.0)
    a, b = ds[1], ds[1]
    assert [s.kind for s in a.segments] == [
        'text', 'noisy_latent', 'caption', 'metaquery']
    assert a.segments[2].tokens == b.segments[2].tokens
    assert torch.equal(a.images[0], b.images[0])


def test_mixture_weights_and_determinism():
    mix = MixtureDataset(
        datasets=dict(t2i=dict(type='ShapesWorldT2IDataset'),
                      cap=dict(type='ShapesWorldCaptionDataset'),
                      edit=dict(type='ShapesWorldEditDataset', vit=False)),
        weights=dict(t2i=2.0, cap=1.0, edit=0.0), num_samples=3000)
    counts = collections.Counter(mix.source_of(i)[0] for i in range(3000))
    assert set(counts) == {'t2i', 'cap'}
    assert abs(counts['t2i'] / 3000 - 2 / 3) < 0.03
    assert mix.source_of(7) == mix.source_of(7)
    batch = pack_sequences([mix[i] for i in range(6)], latent_stride=4,
                           vit_stride=4)
    assert batch.num_samples == 6
    with pytest.raises(ValueError, match='unknown datasets'):
        MixtureDataset(datasets=dict(a=dict(type='ShapesWorldT2IDataset')),
                       weights=dict(b=1.0))


def test_t2i_text_and_max_objects():
    """text='caption' conditions on one of the scene's phrasings instead of
    the GenEval-style prompt; max_objects bounds the scenes."""
    prompt = ShapesWorldT2IDataset(num_samples=20, prompt_dropout=0.0)
    caption = ShapesWorldT2IDataset(num_samples=20, prompt_dropout=0.0,
                                    text='caption')
    differ = 0
    for i in range(20):
        scene = caption.world.scene(i, 'train')
        assert caption[i].meta['prompt'] in caption.world.captions(scene)
        assert prompt[i].meta['prompt'] == prompt.world.prompt(scene)
        differ += caption[i].meta['prompt'] != prompt[i].meta['prompt']
    assert differ > 0
    assert any(len(prompt.world.scene(i, 'train').objects) > 1
               for i in range(40))
    small = ShapesWorldT2IDataset(num_samples=40, max_objects=1)
    assert all(len(small.world.scene(i, 'train').objects) == 1
               for i in range(40))
    with pytest.raises(ValueError, match='text'):
        ShapesWorldT2IDataset(text='label')


def test_benchmark_images_per_prompt(tmp_path):
    """images_per_prompt repeats each GenEval prompt (repeat 0..n-1)."""
    import json
    from uno.datasets.benchmarks import GenEvalPrompts, ShapesWorldBenchmark
    tasks = dict(geneval=dict(n_per_tag=1))
    one = ShapesWorldBenchmark(tasks=tasks)
    three = ShapesWorldBenchmark(tasks=tasks, images_per_prompt=3)
    assert len(three) == 3 * len(one) > 0
    assert [three[k]['repeat'] for k in range(3)] == [0, 1, 2]
    assert {three[k]['prompt'] for k in range(3)} == {one[0]['prompt']}
    meta = tmp_path / 'meta.jsonl'
    meta.write_text('\n'.join(json.dumps(dict(prompt=p, tag='single_object'))
                              for p in ('a red circle', 'a blue square')))
    prompts = GenEvalPrompts(str(meta), images_per_prompt=2)
    assert len(prompts) == 4
    assert [(prompts[i]['prompt'], prompts[i]['repeat'])
            for i in range(4)] == [('a red circle', 0), ('a red circle', 1),
                                   ('a blue square', 0),
                                   ('a blue square', 1)]
