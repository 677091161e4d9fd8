"""Tests of ShapesWorld: determinism, geometry, splits, text and edits."""
import itertools

import numpy as np
import pytest

from uno.datasets.shapesworld import (COLOR_RGB, COLORS, EDIT_KINDS, SHAPES,
                                      TAGS, ShapesWorld, scene_key)
from uno.datasets.shapesworld.sampler import (MARGIN_PX, MAX_OFF_AXIS,
                                              MIN_SHIFT)
from uno.datasets.tokenizer import WordTokenizer

# fraction of its square box that each shape fills (continuous geometry)
FILL = {
    'circle': np.pi / 4,
    'square': 1.0,
    'triangle': 0.5,
    'diamond': 0.5,
    'star': 0.34,
}


@pytest.fixture(scope='module')
def world():
    return ShapesWorld(image_size=32, seed=0)


@pytest.fixture(scope='module')
def scenes(world):
    return [world.scene(i) for i in range(300)]


@pytest.fixture(scope='module')
def edits(world):
    return [world.edit(i) for i in range(200)]


def mask_box(mask):
    """(x0, y0, x1, y1) of a bool mask, ends exclusive."""
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def geneval_relations(box_a, box_b, threshold=0.1):
    """GenEval's relative_position of A to B from (x0, y0, x1, y1) boxes."""
    boxes = np.array([box_a, box_b], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold *
                         (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rel = set()
    rel |= {'left of'} if dx < -0.5 else set()
    rel |= {'right of'} if dx > 0.5 else set()
    rel |= {'above'} if dy < -0.5 else set()
    rel |= {'below'} if dy > 0.5 else set()
    return rel


def test_deterministic(world):
    other = ShapesWorld(image_size=32, seed=0)
    for i in range(20):
        a, b = world.scene(i), other.scene(i)
        assert a == b
        np.testing.assert_array_equal(world.render(a), other.render(b))
        assert world.captions(a) == other.captions(b)
        assert world.caption(a, np.random.default_rng(i)) == \
            other.caption(b, np.random.default_rng(i))
        assert world.edit(i) == other.edit(i)
    reseeded = ShapesWorld(image_size=32, seed=1)
    assert any(world.scene(i) != reseeded.scene(i) for i in range(20))
    assert any(world.edit(i) != reseeded.edit(i) for i in range(20))
    # no global RNG: reseeding numpy's global state changes nothing
    np.random.seed(123)
    assert world.scene(5) == other.scene(5)


def test_render_shape_and_resolution(world, scenes):
    image = world.render(scenes[0])
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    big = world.render(scenes[0], image_size=64)
    assert big.shape == (64, 64, 3)
    # the same scene at 64 px has the same objects, twice as large
    for m32, m64 in zip(world.masks(scenes[0]), world.masks(scenes[0], 64)):
        assert 2.5 < m64.sum() / m32.sum() < 6
    # flat colours: every pixel is the background or a palette colour
    palette = {tuple(world.bg)} | set(COLOR_RGB.values())
    for scene in scenes[:50]:
        pixels = {tuple(p) for p in world.render(scene).reshape(-1, 3)}
        assert pixels <= palette


def test_objects_fit_and_do_not_overlap(world, scenes):
    size = world.image_size
    for scene in scenes:
        image = world.render(scene)  # (32, 32, 3)
        masks = world.masks(scene)  # (N, 32, 32)
        assert len(masks) == len(scene.objects) >= 1
        boxes = []
        for obj, mask in zip(scene.objects, masks):
            x0, y0, x1, y1 = box = mask_box(mask)
            assert x0 >= 1 and y0 >= 1 and x1 <= size - 1 and y1 <= size - 1
            assert box == obj.box(size)
            side = x1 - x0
            assert side == y1 - y0 and side % 2 == 1
            assert abs(mask.sum() / side**2 - FILL[obj.shape]) < 0.15
            boxes.append(box)
        for a, b in itertools.combinations(boxes, 2):
            gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
            assert gap >= MARGIN_PX
        # pixels of each colour == total area of that colour's objects
        for color in {o.color for o in scene.objects}:
            count = np.all(image == COLOR_RGB[color], axis=-1).sum()
            area = sum(m.sum() for o, m in zip(scene.objects, masks)
                       if o.color == color)
            assert count == area


def test_sizes_distinct_at_32px(scenes):
    sides = {'small': set(), 'large': set()}
    for scene in scenes:
        for obj in scene.objects:
            box = obj.box(32)
            sides[obj.size].add(box[2] - box[0])
    assert max(sides['small']) + 2 <= min(sides['large'])


def test_scene_tags(world, scenes):
    seen = {s.tag for s in scenes}
    assert seen == set(TAGS)
    for scene in scenes:
        objs = scene.objects
        shapes = [o.shape for o in objs]
        if scene.tag == 'single_object':
            assert len(objs) == 1
        elif scene.tag == 'counting':
            assert 2 <= len(objs) <= 4
            assert len({(o.shape, o.color, o.size) for o in objs}) == 1
        elif scene.tag == 'two_object':
            assert len(objs) == 2 and shapes[0] != shapes[1]
        elif scene.tag == 'color_attr':
            assert len(objs) == 2 and shapes[0] != shapes[1]
            assert objs[0].color != objs[1].color
        if scene.tag == 'position':
            assert scene.relation in ('left of', 'right of', 'above', 'below')
        else:
            assert scene.relation is None


def test_positions_match_relations(world):
    size = world.image_size
    found = 0
    for i in range(400):
        scene = world.scene(i)
        if scene.tag != 'position':
            continue
        found += 1
        box_a, box_b = [mask_box(m) for m in world.masks(scene)]
        assert geneval_relations(box_a, box_b) == {scene.relation}
        ca = np.array([box_a[0] + box_a[2], box_a[1] + box_a[3]]) / 2
        cb = np.array([box_b[0] + box_b[2], box_b[1] + box_b[3]]) / 2
        horizontal = scene.relation in ('left of', 'right of')
        along, across = (0, 1) if horizontal else (1, 0)
        sign = 1 if scene.relation in ('left of', 'above') else -1
        assert sign * (cb[along] - ca[along]) >= MIN_SHIFT * size - 1
        assert abs(cb[across] - ca[across]) <= MAX_OFF_AXIS * size + 1
    assert found >= 30


def test_canonical_key_ignores_positions_and_direction(scenes):
    scene = next(s for s in scenes if s.tag == 'position')
    a, b = scene.objects
    inverse = {
        'left of': 'right of',
        'right of': 'left of',
        'above': 'below',
        'below': 'above'
    }[scene.relation]
    assert scene_key((b, a), inverse) == scene.key
    moved = [type(a)(**{**a.__dict__, 'cx': 0.3}), b]
    assert scene_key(moved, scene.relation) == scene.key


def test_train_test_disjoint(world):
    train = {world.scene(i, 'train').key for i in range(2000)}
    test = {world.scene(i, 'test').key for i in range(2000)}
    assert train and test and not train & test
    assert all(world.split_of(k) == 'train' for k in train)
    assert all(world.split_of(k) == 'test' for k in test)
    # the split is a property of the key, not of the seed
    reseeded = ShapesWorld(seed=7)
    assert all(
        world.split_of(reseeded.scene(i, 'test').key) == 'test'
        for i in range(50))
    edit_train = {world.edit(i, 'train').key for i in range(200)}
    edit_test = {world.edit(i, 'test').key for i in range(200)}
    assert edit_test and not edit_train & edit_test
    with pytest.raises(ValueError):
        world.scene(0, 'val')


def test_prompts_and_captions(world, scenes):
    assert world.prompt(scenes[0]).startswith('a photo of ')
    for scene in scenes:
        caps = world.captions(scene)
        assert len(set(caps)) >= 3
        assert world.prompt(scene) not in caps
        for text in caps:
            for obj in scene.objects:
                assert obj.color in text
        assert world.caption(scene, np.random.default_rng(0)) in caps
    single = next(s for s in scenes if s.tag == 'single_object')
    obj = single.objects[0]
    article = 'an' if obj.size[0] in 'aeiou' else 'a'
    assert world.prompt(single) == \
        f'a photo of {article} {obj.size} {obj.color} {obj.shape}'
    count = next(s for s in scenes if s.tag == 'counting')
    words = ('two', 'three', 'four')[len(count.objects) - 2]
    assert world.prompt(count).startswith(f'a photo of {words} ')
    assert world.prompt(count).endswith(count.objects[0].shape + 's')
    pos = next(s for s in scenes if s.tag == 'position')
    assert f' {pos.relation} ' in world.prompt(pos)


def test_one_size_world_omits_sizes():
    world = ShapesWorld(sizes=('large', ), seed=3)
    for i in range(30):
        scene = world.scene(i)
        texts = [world.prompt(scene), *world.captions(scene)]
        assert not any('large' in t for t in texts)
        assert all(o.size == 'large' for o in scene.objects)


def test_text_is_in_vocabulary(world, scenes, edits):
    tok = WordTokenizer()
    texts = [world.prompt(s) for s in scenes]
    texts += [c for s in scenes for c in world.captions(s)]
    texts += [e.instruction for e in edits]
    texts += [c for e in edits for c in world.captions(e.target)]
    for text in texts:
        assert tok.unk_id not in tok.encode(text), text
    assert ShapesWorld.words() == sorted(set(ShapesWorld.words()))


def test_edits(world, edits):
    assert {e.kind for e in edits} == set(EDIT_KINDS)
    for pair in edits:
        src, tgt = world.render(pair.source), world.render(pair.target)
        x0, y0, x1, y1 = pair.region
        outside = np.ones(src.shape[:2], bool)  # (H, W)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(src[outside], tgt[outside])
        assert not np.array_equal(src, tgt)
        n_src, n_tgt = len(pair.source.objects), len(pair.target.objects)
        if pair.kind == 'add':
            assert n_tgt == n_src + 1
        elif pair.kind == 'remove':
            assert n_tgt == n_src - 1 >= 1
        else:
            assert n_tgt == n_src
        kept = set(pair.source.objects) & set(pair.target.objects)
        assert len(kept) == min(n_src, n_tgt) - (
            pair.kind in ('recolor', 'move'))
        name = f'{pair.subject.color} {pair.subject.shape}'
        assert name in pair.instruction
        if pair.kind == 'recolor':
            changed = np.any(src != tgt, axis=-1)  # (H, W)
            mask = world.masks(pair.source)[pair.source.objects.index(
                pair.subject)]
            np.testing.assert_array_equal(changed, mask)
            assert pair.instruction.endswith(pair.detail)
        if pair.kind == 'move':
            (new, ) = set(pair.target.objects) - kept
            dx, dy = new.cx - pair.subject.cx, new.cy - pair.subject.cy
            step = {'left': -dx, 'right': dx, 'up': -dy, 'down': dy}
            assert step[pair.detail] >= MIN_SHIFT
            assert (dx == 0) != (dy == 0)


def test_world_options():
    world = ShapesWorld(
        image_size=48,
        max_objects=2,
        shapes=SHAPES[:2],
        colors=COLORS[:3],
        bg_jitter=10,
        seed=2)
    for i in range(40):
        scene = world.scene(i)
        assert len(scene.objects) <= 2
        assert all(abs(c - 240) <= 10 for c in scene.bg)
        assert {o.shape for o in scene.objects} <= set(SHAPES[:2])
        assert world.render(scene).shape == (48, 48, 3)
        assert len(world.edit(i).target.objects) <= 2
    for bad in (dict(max_objects=5), dict(shapes=('hexagon', )),
                dict(test_fraction=0.0), dict(image_size=8)):
        with pytest.raises(ValueError):
            ShapesWorld(**bad)


def test_captions_state_a_relation_whenever_the_picture_shows_one():
    from dataclasses import replace

    from uno.datasets.shapesworld.captions import captions, pair_relation
    world = ShapesWorld(seed=0)
    pos = next(s for s in (world.scene(i) for i in range(200))
               if s.tag == 'position')
    assert pair_relation(pos) == pos.relation
    two = next(s for s in (world.scene(i) for i in range(500))
               if s.tag == 'two_object')
    a, b = two.objects
    aligned = replace(two, objects=(replace(a, cx=0.2, cy=0.5),
                                    replace(b, cx=0.7, cy=0.52)))
    assert pair_relation(aligned) == 'left of'
    assert all(' of ' in c for c in captions(aligned))
    stacked = replace(two, objects=(replace(a, cx=0.5, cy=0.8),
                                    replace(b, cx=0.48, cy=0.2)))
    assert pair_relation(stacked) == 'below'
    diagonal = replace(two, objects=(replace(a, cx=0.2, cy=0.3),
                                     replace(b, cx=0.7, cy=0.7)))
    assert pair_relation(diagonal) == 'left of'  # dominant axis
    for index in range(300):  # a position scene's relation is its axis
        scene = world.scene(index)
        if scene.relation is not None:
            assert pair_relation(replace(scene, relation=None)) == \
                scene.relation
    three = next(s for s in (world.scene(i) for i in range(500))
                 if len(s.objects) == 3)
    assert pair_relation(three) is None


def test_two_object_captions_name_the_left_or_upper_object_first():
    from uno.datasets.shapesworld.captions import captions, reading_order
    world = ShapesWorld(seed=0)
    seen = 0
    for index in range(400):
        scene = world.scene(index)
        order = reading_order(scene)
        if len(scene.objects) != 2:
            assert order is None
            continue
        first, rel, second = order
        assert rel in ('left of', 'above')
        if rel == 'left of':
            assert first.cx < second.cx
        else:
            assert first.cy < second.cy  # image y grows downwards
        for text in captions(scene):
            assert f' {rel} ' in text and 'right of' not in text
            assert text.index(first.shape) < text.index(
                second.shape, text.index(rel))
        seen += 1
    assert seen > 20
