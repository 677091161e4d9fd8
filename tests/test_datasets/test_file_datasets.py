"""JSONL datasets: plans, broken samples skipped and counted, end to end."""
import json
import os

import pytest
from PIL import Image
from torch.utils.data import DataLoader

import uno.datasets.jsonl_base as jsonl_base
from uno.datasets import (EditDataset, ImageCaptionDataset, WordTokenizer,
                          count_broken, pack_and_count)
from uno.datasets.shapesworld import ShapesWorld
from uno.registry import DATASETS, FUNCTIONS
from uno.errors import TrainingStopped, UnoConfigError

from tests.conftest import REPO, mlflow_store
from tests.tools import run_tool

NUM_GOOD = 10
MISSING, CORRUPT = 3, 7  # line numbers (0-based) of the two bad samples
PIPELINE = [dict(type='ResizeToStride', max_size=32, stride=4)]
UNO = dict(caption=True, num_queries=4)


def write_caption_set(root, num_good=NUM_GOOD, bad=(MISSING, CORRUPT),
                      extra_lines=()):
    """``num_good`` rendered scenes plus a missing and a corrupt image."""
    world = ShapesWorld(image_size=32, seed=0)
    os.makedirs(root / 'images', exist_ok=True)
    (root / 'images' / 'corrupt.png').write_text('not a png at all')
    records, good = [], iter(range(num_good))
    for i in range(num_good + len(bad)):
        if i in bad:
            name = 'missing.png' if i == bad[0] else 'corrupt.png'
            records.append(dict(image=f'images/{name}', caption='a thing'))
            continue
        j = next(good)
        scene = world.scene(j)
        Image.fromarray(world.render(scene)).save(
            root / 'images' / f'{j}.png')
        records.append(dict(image=f'images/{j}.png',
                            caption=world.captions(scene),
                            prompt=world.prompt(scene)))
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    ann = root / 'ann.jsonl'
    ann.write_text('\n'.join(lines) + '\n')
    return ann


def write_edit_set(root, num=4, target_caption=True):
    world = ShapesWorld(image_size=32, max_objects=3, seed=0)
    os.makedirs(root / 'edits', exist_ok=True)
    lines = []
    for i in range(num):
        pair = world.edit(i)
        for side in ('source', 'target'):
            Image.fromarray(world.render(getattr(pair, side))).save(
                root / 'edits' / f'{i}_{side}.png')
        rec = dict(source=f'edits/{i}_source.png',
                   target=f'edits/{i}_target.png',
                   instruction=pair.instruction)
        if target_caption:
            rec['target_caption'] = world.captions(pair.target)
        lines.append(json.dumps(rec))
    ann = root / 'edit.jsonl'
    ann.write_text('\n'.join(lines) + '\n')
    return ann


@pytest.fixture
def warnings(monkeypatch):
    """Messages the datasets log (print_log is patched to record them)."""
    logged = []
    monkeypatch.setattr(jsonl_base, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    return logged


def _caption_ds(ann, **kwargs):
    kwargs.setdefault('pipeline', PIPELINE)
    kwargs.setdefault('tokenizer', WordTokenizer())
    return ImageCaptionDataset(str(ann), **kwargs)


def test_broken_samples_are_skipped_counted_and_logged(tmp_path, warnings):
    ds = _caption_ds(write_caption_set(tmp_path))
    assert len(ds) == NUM_GOOD + 2
    samples = [ds[i] for i in range(len(ds))]
    assert [i for i, s in enumerate(samples) if s is None] == [MISSING,
                                                               CORRUPT]
    assert ds.broken_stats == dict(broken=2, read=NUM_GOOD + 2)
    assert len(warnings) == 2
    assert 'missing.png' in warnings[0] and 'no such file' in warnings[0]
    assert 'corrupt.png' in warnings[1] and 'cannot decode' in warnings[1]
    batches = [pack_and_count(samples[i:i + 4], latent_stride=4)
               for i in range(0, len(samples), 4)]
    assert sum(b.broken for b in batches) == 2
    assert sum(b.read for b in batches) == NUM_GOOD + 2
    assert sum(b.num_samples for b in batches) == NUM_GOOD
    assert count_broken(samples) == 2


def test_counts_reach_the_main_process_with_workers(tmp_path, warnings):
    ds = _caption_ds(write_caption_set(tmp_path))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False,
                        collate_fn=lambda s: pack_and_count(s, 4))
    batches = list(loader)
    assert sum(b.broken for b in batches) == 2
    assert sum(b.num_samples for b in batches) == NUM_GOOD
    assert ds.num_broken == 0  # the workers counted, not this process


def test_threshold_error_when_most_samples_are_broken(tmp_path, warnings):
    ann = write_caption_set(tmp_path, num_good=2, bad=tuple(range(2, 10)))
    # 'missing' once, the rest corrupt: 8 of 10 broken
    ds = _caption_ds(ann, max_broken_fraction=0.5,
                     min_samples_for_threshold=5)
    with pytest.raises(RuntimeError) as err:
        for i in range(len(ds)):
            ds[i]
    msg = str(err.value)
    assert 'samples were broken' in msg and 'max_broken_fraction=0.5' in msg
    assert str(tmp_path) in msg
    # below min_samples_for_threshold nothing is raised
    ds = _caption_ds(ann, max_broken_fraction=0.5,
                     min_samples_for_threshold=50)
    assert sum(ds[i] is None for i in range(len(ds))) == 8


def test_warnings_are_rate_limited(tmp_path, warnings):
    ann = write_caption_set(tmp_path, num_good=1, bad=tuple(range(1, 251)))
    ds = _caption_ds(ann, max_broken_fraction=1.0)
    for i in range(len(ds)):
        ds[i]
    assert ds.num_broken == 250
    # the first 10, then the 100th and the 200th
    assert len(warnings) == 12
    assert 'every 100th' in warnings[9]
    assert '[100 broken' in warnings[10] and '[200 broken' in warnings[11]


def test_annotation_file_validation(tmp_path, warnings):
    with pytest.raises(UnoConfigError, match='nope.jsonl does not exist'):
        ImageCaptionDataset(str(tmp_path / 'nope.jsonl'))
    with pytest.raises(UnoConfigError, match='is a folder'):
        ImageCaptionDataset(str(tmp_path))
    ann = write_caption_set(
        tmp_path, bad=(), extra_lines=['{"image": "a.png"', '[1, 2]',
                                       '{"caption": "no image"}', ''])
    ds = _caption_ds(ann)
    assert len(ds) == NUM_GOOD + 3  # the blank line is not a sample
    assert [ds[i] for i in range(NUM_GOOD, NUM_GOOD + 3)] == [None] * 3
    assert ds.num_broken == 3
    assert 'malformed JSON' in warnings[0]
    assert 'JSON object' in warnings[1]
    assert "missing key(s) ['image']" in warnings[2]
    bad = tmp_path / 'bad.jsonl'
    bad.write_text('not json\n{"image": 1}\n')
    with pytest.raises(ValueError, match='no valid sample'):
        ImageCaptionDataset(str(bad))
    # relative to data_root, too
    ds = ImageCaptionDataset('ann.jsonl', data_root=str(tmp_path),
                             pipeline=PIPELINE)
    assert ds[0] is not None


def test_refetch_replaces_broken_samples(tmp_path, warnings):
    ds = _caption_ds(write_caption_set(tmp_path), max_refetch=2)
    plan = ds[MISSING]
    assert plan is not None
    assert plan.meta['index'] == MISSING + 1
    assert plan.meta['broken_skipped'] == 1
    assert count_broken([plan, ds[0]]) == 1
    batch = pack_and_count([plan, None], latent_stride=4)
    assert (batch.broken, batch.read) == (2, 3)
    with pytest.raises(TrainingStopped, match='all 2 samples'):
        pack_and_count([None, None], latent_stride=4)


def test_a_field_of_the_wrong_type_is_a_broken_sample(tmp_path, warnings):
    ann = write_caption_set(tmp_path, bad=(), extra_lines=[
        '{"image": 5, "caption": "a red circle"}',
        '{"image": "a.png", "caption": 7}'])
    ds = _caption_ds(ann)
    assert [ds[i] for i in (NUM_GOOD, NUM_GOOD + 1)] == [None, None]
    assert ds.num_broken == 2 and ds[0] is not None
    assert 'wrong type' in warnings[0] or 'must be a string' in warnings[0]


def test_t2i_plans(tmp_path, warnings):
    ann = write_caption_set(tmp_path, bad=())
    tok = WordTokenizer()
    ds = _caption_ds(ann, prompt_dropout=0.0)
    plan = ds[0]
    assert plan.kinds() == ['text', 'noisy_latent']
    assert plan.images[0].shape == (3, 32, 32)
    assert tok.decode(plan.segments[0].tokens) == plan.meta['prompt']
    assert plan.meta['caption'] is None
    # the plan is a function of the index
    assert ds[0].segments[0].tokens == plan.segments[0].tokens

    ds = _caption_ds(ann, prompt_dropout=0.0, uno=UNO)
    plan = ds[1]
    assert plan.kinds() == ['text', 'noisy_latent', 'caption', 'metaquery']
    assert plan.segments[2].sees == (1, ) and plan.segments[3].sees == (1, )
    assert plan.segments[3].target_image == 0
    record = json.loads(ann.read_text().splitlines()[1])
    assert plan.meta['caption'] in record['caption']
    assert tok.decode(plan.segments[2].tokens) == plan.meta['caption']

    dropped = _caption_ds(ann, prompt_dropout=1.0)[0]
    assert dropped.segments[0].tokens == [tok.bos_id, tok.eos_id]
    assert dropped.meta['dropped']
    batch = pack_and_count([ds[i] for i in range(4)], latent_stride=4)
    assert batch.num_samples == 4 and batch.broken == 0


def test_caption_task_plans(tmp_path, warnings):
    ann = write_caption_set(tmp_path, bad=())
    plan = _caption_ds(ann, task='caption', uno=UNO)[0]
    assert plan.kinds() == ['vit', 'caption']
    plan = _caption_ds(ann, task='caption', latent=True,
                       caption_prompt='describe the image.')[0]
    assert plan.kinds() == ['clean_latent', 'text', 'caption']
    batch = pack_and_count([plan], latent_stride=4)
    assert batch.ce_index.numel() > 0
    with pytest.raises(ValueError):
        _caption_ds(ann, task='vqa')


def test_edit_plans(tmp_path, warnings):
    ann = write_edit_set(tmp_path)
    pipeline = [dict(type='ResizeToStride', max_size=32, stride=4),
                dict(type='RandomCrop', size=28),
                dict(type='RandomHorizontalFlip', p=0.5)]
    ds = EditDataset(str(ann), pipeline=pipeline, instruction_dropout=0.0)
    plan = ds[0]
    assert plan.kinds() == ['clean_latent', 'vit', 'text', 'noisy_latent']
    assert [s.image for s in plan.segments if s.image is not None] == [0, 0,
                                                                       1]
    assert len(plan.images) == 2
    assert plan.images[0].shape == plan.images[1].shape == (3, 28, 28)

    ds = EditDataset(str(ann), pipeline=PIPELINE, uno=UNO)
    plan = ds[1]
    assert plan.kinds() == ['clean_latent', 'vit', 'text', 'noisy_latent',
                            'caption', 'metaquery']
    assert plan.segments[4].sees == (3, ) and plan.segments[5].sees == (3, )
    assert plan.segments[5].target_image == 1  # the target's features
    record = json.loads(ann.read_text().splitlines()[1])
    assert plan.meta['caption'] in record['target_caption']
    batch = pack_and_count([ds[i] for i in range(len(ds))], latent_stride=4,
                           vit_stride=4)
    assert batch.num_samples == 4 and batch.broken == 0
    assert batch.vit_images.numel() == 4 and batch.mq_images.numel() == 4

    plan = EditDataset(str(ann), vit=False)[0]
    assert plan.kinds() == ['clean_latent', 'text', 'noisy_latent']


def test_edit_broken_and_missing_caption(tmp_path, warnings):
    ann = write_edit_set(tmp_path, target_caption=False)
    with pytest.raises(ValueError, match='target_caption'):
        EditDataset(str(ann), uno=UNO)
    assert EditDataset(str(ann), uno=dict(num_queries=2))[0].kinds()[-1] == (
        'metaquery')
    os.remove(tmp_path / 'edits' / '2_target.png')
    ds = EditDataset(str(ann))
    assert ds[2] is None and ds.num_broken == 1
    assert '2_target.png' in warnings[0]


def test_registered_and_built_from_config(tmp_path):
    ann = write_caption_set(tmp_path, bad=())
    assert 'pack_and_count' in FUNCTIONS.module_dict
    ds = DATASETS.build(dict(type='ImageCaptionDataset', ann_file=str(ann),
                             pipeline=PIPELINE,
                             tokenizer=dict(type='WordTokenizer')))
    assert isinstance(ds, ImageCaptionDataset)
    assert DATASETS.get('EditDataset') is EditDataset


CONFIG = '''
_base_ = [
    '{repo}/configs/_base_/models/mot_tiny.py',
    '{repo}/configs/_base_/objectives/flow.py',
    '{repo}/configs/_base_/schedules/iter_200_adamw.py',
    '{repo}/configs/_base_/default_runtime.py',
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pack_and_count', latent_stride=4),
    dataset=dict(
        type='ImageCaptionDataset',
        ann_file='{ann}',
        pipeline=[dict(type='ResizeToStride', max_size=32, stride=4)],
        tokenizer=dict(type='WordTokenizer', vocab_size=128)))
custom_hooks = [dict(type='BrokenSampleHook')]
train_cfg = dict(max_iters=6, val_interval=1000)
val_cfg = None
test_cfg = None
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=1000, save_last=False))
'''


def test_train_end_to_end_skips_broken_samples(
        tmp_path, monkeypatch, capsys):
    # 22 good + 2 broken = 24 samples = 6 batches of 4: one epoch
    ann = write_caption_set(tmp_path, num_good=22, bad=(5, 17))
    cfg = tmp_path / 'file_t2i.py'
    cfg.write_text(CONFIG.format(repo=REPO, ann=ann))
    db = tmp_path / 'm.db'
    monkeypatch.setenv('MLFLOW_TRACKING_URI', mlflow_store(db))
    code, out, err = run_tool('train', [
        str(cfg), '--work-dir', str(tmp_path / 'work_dirs' / 'file_t2i')
    ], monkeypatch, capsys)
    log = out + err
    assert code == 0, log[-3000:]
    assert 'skipped 2 broken samples of 24 read' in log
    assert 'missing.png' in log and 'corrupt.png' in log

    import mlflow
    client = mlflow.MlflowClient(f'sqlite:///{db}')
    runs = [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, 'data/broken')
    assert max(m.value for m in history) == 2


def test_non_utf8_line_and_overlong_text_are_broken_samples(
        tmp_path, warnings):
    ann = write_caption_set(tmp_path, bad=())
    text = ann.read_text()
    with open(ann, 'ab') as f:
        f.write(b'{"image": "images/0.png", "caption": "caf\xe9"}\n')
        f.write(json.dumps(dict(image='images/0.png',
                                caption='red ' * 50)).encode() + b'\n')
    ds = _caption_ds(ann, max_text_tokens=20)
    assert ds[NUM_GOOD] is None and ds[NUM_GOOD + 1] is None
    assert 'not UTF-8' in warnings[0] and 'ann.jsonl:11' in warnings[0]
    assert 'above max_text_tokens=20' in warnings[1]
    (tmp_path / 'u16.jsonl').write_bytes(text.encode('utf-16'))
    with pytest.raises(UnoConfigError, match='u16.jsonl holds no valid'):
        _caption_ds(tmp_path / 'u16.jsonl')


def test_images_of_two_sizes_in_a_batch_name_the_files(tmp_path, warnings):
    ann = write_caption_set(tmp_path, num_good=2, bad=())
    Image.new('RGB', (64, 48)).save(tmp_path / 'images' / '1.png')
    ds = _caption_ds(ann)
    with pytest.raises(UnoConfigError, match=r'same shape.*images/1\.png.*'
                       'CenterCrop'):
        pack_and_count([ds[0], ds[1]], latent_stride=4)
