"""Tests of the ShapesWorld word tokenizer."""
import numpy as np
import pytest

from uno.datasets.shapesworld import ShapesWorld
from uno.datasets.tokenizer import WordTokenizer
from uno.registry import TOKENIZERS


def test_special_ids():
    tok = WordTokenizer()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id,
            tok.vision_start_id, tok.vision_end_id) == (0, 1, 2, 3, 4, 5)
    assert tok.tokens[:6] == [
        '<pad>', '<bos>', '<eos>', '<unk>', '<vision_start>', '<vision_end>'
    ]
    # specials, '.', ',' and every world word
    assert tok.vocab_size == len(tok) == 6 + 2 + len(ShapesWorld.words())


def test_encode_splits_punctuation_and_lowercases():
    tok = WordTokenizer()
    ids = tok.encode('A Red circle, a blue star.')
    assert [tok.tokens[i] for i in ids
            ] == ['a', 'red', 'circle', ',', 'a', 'blue', 'star', '.']
    assert tok('a red circle') == tok.encode('a red circle')
    assert tok.encode('a zebra') == [tok.encode('a')[0], tok.unk_id]
    assert tok.encode('') == []


def test_round_trip_captions():
    world, tok = ShapesWorld(seed=0), WordTokenizer()
    for i in range(50):
        scene = world.scene(i)
        for text in [
                world.prompt(scene), *world.captions(scene),
                world.edit(i).instruction
        ]:
            ids = tok.encode(text)
            assert tok.decode(ids) == text
            # specials are dropped on decode unless asked for
            wrapped = [tok.bos_id, *ids, tok.eos_id, tok.pad_id]
            assert tok.decode(wrapped) == text
            assert tok.decode(np.array(wrapped)) == text
            assert tok.decode(wrapped, skip_special=False).startswith('<bos>')


def test_vocab_is_deterministic():
    words = ShapesWorld.words()
    a = WordTokenizer(list(reversed(words)) + words[:3])
    b = WordTokenizer()
    assert a.tokens == b.tokens
    assert WordTokenizer(['b', 'a', 'A']).tokens[-2:] == ['a', 'b']


def test_vocab_padding():
    base = WordTokenizer()
    tok = WordTokenizer(vocab_size=128)
    assert tok.vocab_size == 128
    assert tok.tokens[:base.vocab_size] == base.tokens
    ids = tok.encode('a red circle.')
    assert ids == base.encode('a red circle.')
    assert tok.decode(ids + [127]) == 'a red circle.'
    with pytest.raises(ValueError):
        WordTokenizer(vocab_size=base.vocab_size - 1)
    with pytest.raises(ValueError):
        tok.decode([128])


def test_registered():
    tok = TOKENIZERS.build(dict(type='WordTokenizer', vocab_size=64))
    assert isinstance(tok, WordTokenizer) and tok.vocab_size == 64
