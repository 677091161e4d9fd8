"""tools/analysis/probe_understanding.py: the understanding probe.

The attribute scoring it relies on gives 1.0 on every attribute for the
ground-truth text of every phrasing, and the tool runs end to end on a
tiny random model, writing the JSON of the documented form.
"""
import importlib.util
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from safetensors.torch import save_file

from tests.conftest import REPO
from uno.datasets.shapesworld import ShapesWorld
from uno.datasets.shapesworld import captions as text
from uno.evaluation import score_caption

TOOL = osp.join(REPO, 'tools/analysis/probe_understanding.py')
MODEL = osp.join(REPO, 'configs/_base_/models/mot_tiny_vit.py')
ATTRS = ('shape', 'color', 'size', 'count', 'relation', 'exact')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('probe_understanding',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _phrasings(world, scene):
    """Every text the world writes for a scene: its captions (five; four
    for two objects) and the GenEval prompt (captions() is the one source
    of the phrasings)."""
    return world.captions(scene) + [world.prompt(scene)]


@pytest.mark.parametrize('sizes', [('small', 'large'), ('small', )])
def test_ground_truth_text_scores_one(tool, sizes):
    world = ShapesWorld(image_size=32, seed=0, sizes=sizes)
    scenes = [world.scene(i, 'test') for i in range(240)]
    tags = {s.tag for s in scenes}
    assert tags == {'single_object', 'two_object', 'counting', 'color_attr',
                    'position'}  # every template branch is exercised
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    for k in range(6):  # phrasing k of every scene, scored as the tool does
        texts = [(lambda p: p[k % len(p)])(_phrasings(world, s))
                 for s in scenes]
        res = tool.aggregate(tool.score_texts(texts, scenes,
                                              world.with_size))
        for attr in ATTRS:
            if attr == 'size' and not world.with_size:
                assert math.isnan(res[attr])  # not applicable
                continue
            assert res[attr] == 1.0, (k, attr, res)


def test_count_does_not_depend_on_shape(world=ShapesWorld(seed=0)):
    scene = next(s for s in (world.scene(i, 'test') for i in range(300))
                 if s.tag == 'counting')
    obj, n = scene.objects[0], len(scene.objects)
    other = next(s for s in ('circle', 'square') if s != obj.shape)
    caption = f'{text.COUNT_WORDS[n - 1]} {obj.size} {obj.color} {other}s.'
    res = score_caption(caption, scene)
    assert res['shape_acc'] == 0 and res['color_acc'] == 1
    assert res['object_count_acc'] == 1  # the probe's count
    assert res['count_acc'] == 0  # per shape word: the shape error again
    res = score_caption(f'a {obj.size} {obj.color} {obj.shape}.', scene)
    assert res['object_count_acc'] == 0 and res['shape_acc'] == 1 / n


def test_size_and_overgeneration(world=ShapesWorld(seed=0)):
    scene = next(s for s in (world.scene(i, 'test') for i in range(300))
                 if s.tag == 'position')
    a, b = scene.objects
    flip = dict(small='large', large='small')
    res = score_caption(f'a {a.color} {a.shape} {scene.relation} a '
                        f'{flip[b.size]} {b.color} {b.shape}.', scene)
    assert res['size_acc'] == 0  # one size unstated, one wrong
    assert res['color_acc'] == res['shape_acc'] == 1
    assert score_caption(world.prompt(scene), scene,
                         with_size=False)['size_acc'] is None
    # more parsed objects than scene objects, the related ones last:
    # the relation is still scored (this used to raise an IndexError)
    extra = f'a {a.size} red star, a {a.size} green star and ' \
        f'a {a.size} {a.color} {a.shape} {scene.relation} ' \
        f'a {b.size} {b.color} {b.shape}.'
    res = score_caption(extra, scene)
    assert res['relation_acc'] == 1.0 and res['object_count_acc'] == 0


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    cfg = Config.fromfile(MODEL)
    torch.manual_seed(0)
    from uno.registry import MODELS
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('probe') / 'tiny.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(path))
    return str(path)


def test_clean_latent_view_is_t0(tool, tiny_checkpoint):
    """t = 0 of the noisy path reads exactly the clean latents (the
    captioner's latent mode), t = 1 does not."""
    from uno.datasets.builder import to_tensor_image
    from uno.models.sampling import Captioner
    cfg = Config.fromfile(MODEL)
    model = tool.build_model(cfg, tiny_checkpoint)
    with torch.no_grad():  # captions that depend on the latents
        model.lm_head.weight.normal_(std=1.0)
        model.vae2llm.weight.normal_(std=1.0)
    tok = tool.build_tokenizer(cfg, model)
    world = ShapesWorld(seed=0)
    images = torch.stack([to_tensor_image(world.render(world.scene(i)))
                          for i in range(3)])
    cap = Captioner(max_new_tokens=6)
    clean = cap.caption(model, images, tok, mode='latent')
    noise = tool.make_noise(3, 64, 48, seed=0)
    assert tool.caption_noisy(model, images, tok, cap, 0.0, noise) == clean
    assert tool.caption_noisy(model, images, tok, cap, 1.0, noise) != clean


def test_tool_end_to_end(tool, tiny_checkpoint, tmp_path, capsys):
    out, png = tmp_path / 'probe.json', tmp_path / 'probe.png'
    tool.main([MODEL, tiny_checkpoint, '--num-images', '4', '--batch-size',
               '3', '--max-new-tokens', '6', '--out', str(out), '--plot',
               str(png)])
    result = json.loads(out.read_text())
    assert set(result) == {'clean', 'latent'}
    assert list(result['latent']) == ['0.0', '0.25', '0.5', '0.75', '1.0']
    for accs in [result['clean'], *result['latent'].values()]:
        assert set(accs) == set(ATTRS)
    assert png.stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'clean (ViT)' in printed and 'latent t=0.25' in printed


def test_reads_a_training_pth_inert(tool, tiny_checkpoint, tmp_path):
    """A training checkpoint (trainer keys ``model.*``) loads through the
    inert loader; an empty file is one clear error."""
    from safetensors.torch import load_file

    from uno.engine.checkpoint import save_checkpoint_file
    from uno.errors import UnoConfigError
    weights = load_file(tiny_checkpoint)
    pth = tmp_path / 'iter_2.pth'
    save_checkpoint_file(dict(state_dict={f'model.{k}': v for k, v in
                                          weights.items()}), str(pth))
    model = tool.build_model(Config.fromfile(MODEL), str(pth))
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key]), key
    bad = tmp_path / 'empty.pth'
    bad.write_bytes(b'')
    with pytest.raises(UnoConfigError, match='empty'):
        tool.build_model(Config.fromfile(MODEL), str(bad))
