"""Packing plans into one sequence: positions, routing, masks."""
import pytest
import torch

from tests.conftest import BOS, EOS, VE, VS, t2i_sample
from uno.structures.packing import pack_sequences
from uno.structures import Segment, SequencePlan


def test_t2i_layout_positions_and_routing():
    batch = pack_sequences([t2i_sample(prompt_len=3, image_size=8)],
                           latent_stride=4)
    # prompt: bos + 3 + eos = 5 tokens; image: vs + 2x2 latents + ve = 6
    assert batch.num_tokens == 11
    assert batch.input_ids[:5].tolist() == [BOS, 10, 11, 12, EOS]
    assert batch.input_ids[5].item() == VS and batch.input_ids[10] == VE
    # text increments, the whole image segment shares one position
    assert batch.position_ids.tolist() == [0, 1, 2, 3, 4] + [5] * 6
    assert batch.gen_index.tolist() == [6, 7, 8, 9]
    assert batch.noisy_index.tolist() == [6, 7, 8, 9]
    assert batch.noisy_pos.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # markers are text tokens read by the und expert
    assert set(batch.text_index.tolist()) == {0, 1, 2, 3, 4, 5, 10}
    assert set(batch.und_index.tolist()) == set(range(11)) - {6, 7, 8, 9}
    assert batch.ce_index.numel() == 0


def test_mask_rules_t2i():
    batch = pack_sequences([t2i_sample(prompt_len=2, image_size=8)],
                           latent_stride=4)
    m = batch.dense_mask()
    text, image = range(0, 4), range(4, 10)
    for q in text:  # causal text, never sees the image
        for k in range(10):
            assert m[q, k] == (k <= q and k in text)
    for q in image:  # full inside the image, sees the whole prompt
        assert m[q, list(image)].all() and m[q, list(text)].all()


def test_noisy_segment_hidden_from_later_default_segments():
    plan = t2i_sample(prompt_len=1, image_size=4)
    plan.segments.append(Segment('text', tokens=[BOS, 30, EOS]))
    batch = pack_sequences([plan], latent_stride=4)
    m = batch.dense_mask()
    later = torch.nonzero(batch.segment_ids == 2).flatten()
    noisy = torch.nonzero(batch.segment_ids == 1).flatten()
    prompt = torch.nonzero(batch.segment_ids == 0).flatten()
    assert not m[later][:, noisy].any()
    assert m[later][:, prompt].all()


def test_uno_caption_and_metaqueries_see_noisy_not_prompt():
    plan = t2i_sample(prompt_len=2, image_size=8, caption_len=3,
                      num_queries=4)
    batch = pack_sequences([plan], latent_stride=4)
    m = batch.dense_mask()
    seg = batch.segment_ids
    prompt, noisy = (seg == 0), (seg == 1)
    cap, mq = (seg == 2), (seg == 3)
    assert not m[cap][:, prompt].any() and m[cap][:, noisy].all()
    assert not m[mq][:, prompt].any() and m[mq][:, noisy].all()
    assert not m[mq][:, cap].any()  # metaqueries do not see the caption
    # caption CE: predict tokens 1.. from 0..n-1 of the caption segment
    cap_pos = torch.nonzero(cap).flatten()
    assert batch.ce_index.tolist() == cap_pos[:-1].tolist()
    assert batch.ce_labels.tolist() == [20, 21, 22, EOS]
    assert batch.mq_slot.tolist() == [0, 1, 2, 3]
    assert batch.mq_images.tolist() == [0]


def test_metaqueries_can_see_caption_when_configured():
    plan = t2i_sample(caption_len=2, num_queries=2, mq_sees_caption=True)
    batch = pack_sequences([plan], latent_stride=4)
    m, seg = batch.dense_mask(), batch.segment_ids
    assert m[seg == 3][:, seg == 2].all()


def test_samples_never_see_each_other():
    batch = pack_sequences(
        [t2i_sample(seed=0), t2i_sample(seed=1, prompt_len=5)],
        latent_stride=4)
    m = batch.dense_mask()
    s = batch.sample_ids
    assert not (m & (s[:, None] != s[None, :])).any()
    # positions restart in every sample
    assert batch.position_ids[s == 1][0] == 0
    assert batch.noisy_images.tolist() == [0, 1]
    assert batch.noisy_group.unique().tolist() == [0, 1]


def test_token_budget_keeps_whole_samples():
    plans = [t2i_sample(seed=i) for i in range(4)]
    one = pack_sequences(plans[:1], latent_stride=4).num_tokens
    batch = pack_sequences(plans, latent_stride=4, max_tokens=2 * one + 1)
    assert batch.num_samples == 2 and batch.num_tokens == 2 * one


def test_broken_samples_are_dropped_and_errors_are_clear():
    batch = pack_sequences([None, t2i_sample()], latent_stride=4)
    assert batch.num_samples == 1
    with pytest.raises(ValueError, match='every sample'):
        pack_sequences([None], latent_stride=4)
    with pytest.raises(ValueError, match='not divisible'):
        pack_sequences([t2i_sample(image_size=6)], latent_stride=4)


def test_plan_validation():
    with pytest.raises(ValueError, match='earlier segment'):
        SequencePlan([Segment('text', tokens=[1, 2], sees=(0, ))])
    with pytest.raises(ValueError, match='unknown segment kind'):
        Segment('video')
    with pytest.raises(ValueError, match='needs an image'):
        Segment('noisy_latent')


def test_to_device_keeps_fields():
    batch = pack_sequences([t2i_sample()], latent_stride=4)
    batch.broken, batch.read = 1, 2
    moved = batch.to('cpu')
    assert torch.equal(moved.dense_mask(), batch.dense_mask())
    assert (moved.broken, moved.read) == (1, 2)
