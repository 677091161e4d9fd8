"""UNO's gradient path: frozen understanding, live gradients into gen.

The understanding losses must reach the generation expert through the
shared attention while every frozen parameter gets no gradient, and a UNO
step must leave the understanding path bit-identical.
"""
import pytest
import torch

from tests.conftest import BOS, EOS, UNO_OBJECTIVES, t2i_sample
from uno.structures.packing import pack_sequences
from uno.engine import UnoTrainer
from uno.structures import NoisyLatents, Segment, SequencePlan


def _trainer(uno_model_cfg, **weights):
    torch.manual_seed(0)
    objectives = {k: dict(v, weight=weights.get(k, v['weight']))
                  for k, v in UNO_OBJECTIVES.items()}
    trainer = UnoTrainer(model=uno_model_cfg, objectives=objectives)
    # a trained model has a non-zero velocity head; so do we
    torch.nn.init.normal_(trainer.model.llm2vae.weight, std=0.1)
    return trainer


def _uno_batch(n=2):
    return pack_sequences([t2i_sample(seed=i, caption_len=3, num_queries=4)
                           for i in range(n)], latent_stride=4)


def _gen_grads(model):
    return {n: p.grad for n, p in model.named_parameters()
            if '.experts.gen.' in n}


@pytest.mark.parametrize('only', ['caption', 'regression'])
def test_understanding_loss_alone_reaches_gen_expert(uno_model_cfg, only):
    weights = dict(flow=0.0, caption=0.0, regression=0.0)
    weights[only] = 1.0
    trainer = _trainer(uno_model_cfg, **weights)
    total, logs = trainer.compute_loss(_uno_batch())
    assert f'loss/{only}' in logs and 'loss/flow' not in logs
    total.backward()
    grads = _gen_grads(trainer.model)
    nonzero = [n for n, g in grads.items() if g is not None and g.abs().sum()]
    # every layer's gen expert receives gradient through attention
    for layer in range(2):
        assert any(f'layers.{layer}.experts.gen.' in n for n in nonzero)
    for name, p in trainer.model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name


def test_frozen_parts_are_exactly_the_configured_ones(uno_model_cfg):
    trainer = _trainer(uno_model_cfg)
    frozen = {n for n, p in trainer.model.named_parameters()
              if not p.requires_grad}
    assert any('.experts.und.' in n for n in frozen)
    assert all(not n.startswith(('decoder.layers', 'decoder.norm'))
               or '.und' in n for n in frozen)
    for prefix in ('embed_tokens', 'lm_head', 'und_encoder', 'connector'):
        assert any(n.startswith(prefix) for n in frozen), prefix
    trainable = {n for n, p in trainer.named_parameters() if p.requires_grad}
    assert any('.experts.gen.' in n for n in trainable)
    assert any(n.startswith('objectives.objectives.regression.projector')
               for n in trainable)
    assert 'model.metaquery.weight' in trainable


def test_understanding_path_is_bit_identical_after_a_uno_step(
        uno_model_cfg):
    trainer = _trainer(uno_model_cfg)
    image = torch.rand(3, 8, 8) * 2 - 1
    # understanding-only input: [vit image, caption] read by the und expert
    und_only = SequencePlan([
        Segment('vit', image=0, markers=(4, 5)),
        Segment('caption', tokens=[BOS, 20, 21, EOS], loss=True),
    ], images=[image])
    probe = pack_sequences([und_only], latent_stride=4, vit_stride=4)
    with torch.no_grad():
        before = trainer.model(probe)
    optim = torch.optim.AdamW(
        [p for p in trainer.parameters() if p.requires_grad], lr=1e-2,
        weight_decay=0.1)
    gen_before = trainer.model.decoder.layers[0].experts['gen'] \
        .q_proj.weight.clone()
    total, _ = trainer.compute_loss(_uno_batch())
    total.backward()
    optim.step()
    with torch.no_grad():
        after = trainer.model(probe)
    assert torch.equal(before.hidden, after.hidden)
    assert torch.equal(before.ce_logits, after.ce_logits)
    assert not torch.equal(
        gen_before,
        trainer.model.decoder.layers[0].experts['gen'].q_proj.weight)


def _perturbation_outputs(model, trainer, plan):
    """Outputs for the plan, with other prompt words, with other noise."""
    batch = pack_sequences([plan], latent_stride=4)
    noisy = trainer.objectives.prepare(
        model, batch, torch.Generator().manual_seed(0)).noisy
    with torch.no_grad():
        ref = model(batch, noisy)
        other = pack_sequences([plan], latent_stride=4)
        prompt = batch.segment_ids == 0
        other.input_ids = batch.input_ids.clone()
        other.input_ids[prompt & (other.input_ids >= 10)] += 7
        new_prompt = model(other, noisy)
        other.input_ids = batch.input_ids
        shifted = NoisyLatents(noisy.latents + 0.5, noisy.timesteps)
        new_noise = model(other, shifted)
    return ref, new_prompt, new_noise


@pytest.mark.parametrize('layers', [1, 2])
def test_prompt_masking(uno_model_cfg, layers):
    """Caption and metaqueries never attend to the prompt directly.

    With one layer their outputs are bit-identical under another prompt.
    In deeper models prompt information can reach them only through the
    noisy image's hidden states (the generation expert's representation,
    the path UNO trains); with the noisy image itself cut off from the
    prompt they are bit-identical at any depth. Other noise always
    changes them: they read the noisy latents.
    """
    cfg = dict(uno_model_cfg, llm=dict(uno_model_cfg['llm'],
                                       num_layers=layers))
    trainer = _trainer(cfg)
    model = trainer.model
    plan = t2i_sample(seed=0, caption_len=3, num_queries=4)
    if layers > 1:
        plan.segments[1].sees = ()  # the noisy image does not read it
    ref, new_prompt, new_noise = _perturbation_outputs(model, trainer, plan)
    assert torch.equal(new_prompt.ce_logits, ref.ce_logits)
    assert torch.equal(new_prompt.mq_hidden, ref.mq_hidden)
    assert not torch.allclose(new_noise.ce_logits, ref.ce_logits)
    assert not torch.allclose(new_noise.mq_hidden, ref.mq_hidden)


def test_deep_models_read_the_prompt_only_through_the_noisy_image(
        uno_model_cfg):
    trainer = _trainer(uno_model_cfg)  # 2 layers, default visibility
    ref, new_prompt, _ = _perturbation_outputs(
        trainer.model, trainer, t2i_sample(seed=0, caption_len=3,
                                           num_queries=4))
    assert not torch.allclose(new_prompt.velocity, ref.velocity)
    assert not torch.equal(new_prompt.ce_logits, ref.ce_logits)
