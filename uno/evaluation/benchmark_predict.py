"""Model-side work of the benchmarks: generate, edit, caption.

``UnoTrainer.predict`` hands lists of benchmark task dicts here (see
:mod:`uno.datasets.benchmarks`); each task is run batched with the
configured sampler or captioner and returns the dicts the metrics in
:mod:`uno.evaluation` consume. Noise is seeded by the first sample index
of the batch, so a checkpoint's benchmark numbers are reproducible.
"""
from collections import defaultdict
from typing import Dict, List

import torch
import torch.nn.functional as F

from uno.datasets.builder import to_uint8_image
from uno.structures.packing import pack_sequences
from uno.structures.plans import caption_plan, edit_plan
from uno.models.sampling import Captioner, FlowSampler
from uno.structures import SequencePlan
from uno.utils.seeding import derived_generator


def _generator(items: List[dict], device, seed: int) -> torch.Generator:
    return derived_generator(seed, int(items[0]['index']), device=device)


def run_geneval(model, items, tokenizer, sampler: FlowSampler, seed):
    device = model.embed_tokens.weight.device
    images = sampler.sample(model, [it['prompt_ids'] for it in items],
                            tokenizer, items[0]['image_size'],
                            generator=_generator(items, device, seed))
    return [dict(task='geneval', index=it['index'], prompt=it['prompt'],
                 metadata=it['metadata'], image=to_uint8_image(img))
            for it, img in zip(items, images)]


def run_edit(model, items, tokenizer, sampler: FlowSampler, seed):
    device = model.embed_tokens.weight.device
    vit = model.und_encoder is not None
    blank = torch.zeros_like(items[0]['source'])

    def plans(drop: bool):
        return [SequencePlan(edit_plan([] if drop else it['instruction_ids'],
                                       tokenizer, vit=vit),
                             images=[it['source'], blank]) for it in items]

    uncond = plans(True) if sampler.cfg_scale != 1.0 else None
    outputs = sampler.sample_plans(model, plans(False), uncond,
                                   generator=_generator(items, device, seed))
    return [dict(task='edit', index=it['index'], pair=it['pair'],
                 source=to_uint8_image(it['source']),
                 output=to_uint8_image(out))
            for it, out in zip(items, outputs)]


@torch.no_grad()
def reference_nll(model, items, tokenizer) -> List[tuple]:
    """Summed NLL and token count of each reference caption."""
    mode_latent = model.und_encoder is None
    plans = [SequencePlan(caption_plan(it['reference_ids'], tokenizer,
                                       latent=mode_latent),
                          images=[it['image']]) for it in items]
    stride = getattr(model.und_encoder, 'stride', 0)
    batch = pack_sequences(plans, latent_stride=model.latent_encoder.stride,
                           vit_stride=stride).to(
                               model.embed_tokens.weight.device)
    out = model(batch)
    ce = F.cross_entropy(out.ce_logits.float(), batch.ce_labels,
                         reduction='none')
    sums = torch.zeros(len(items)).index_add_(0, batch.ce_sample.cpu(),
                                              ce.cpu())
    counts = torch.bincount(batch.ce_sample.cpu(), minlength=len(items))
    return list(zip(sums.tolist(), counts.tolist()))


def run_caption(model, items, tokenizer, captioner: Captioner, seed):
    device = model.embed_tokens.weight.device
    images = torch.stack([it['image'] for it in items]).to(device)
    mode = 'vit' if model.und_encoder is not None else 'latent'
    ids = captioner.caption(model, images, tokenizer, mode=mode,
                            generator=_generator(items, device, seed))
    nll = reference_nll(model, items, tokenizer)
    return [dict(task='caption', index=it['index'], scene=it['scene'],
                 caption=tokenizer.decode(c), reference=it['reference'],
                 nll=n, num_tokens=k, image=to_uint8_image(it['image']))
            for it, c, (n, k) in zip(items, ids, nll)]


def predict_benchmark(model, items: List[dict], tokenizer,
                      sampler: FlowSampler, captioner: Captioner,
                      seed: int = 0) -> List[dict]:
    """Run every task of a batch of benchmark items, keeping their order.
    """
    by_task: Dict[str, List[dict]] = defaultdict(list)
    for it in items:
        by_task[it['task']].append(it)
    runners = dict(geneval=lambda b: run_geneval(model, b, tokenizer,
                                                 sampler, seed),
                   edit=lambda b: run_edit(model, b, tokenizer, sampler,
                                           seed),
                   caption=lambda b: run_caption(model, b, tokenizer,
                                                 captioner, seed))
    results = {}
    for task, batch in by_task.items():
        if task not in runners:
            raise ValueError(f'unknown benchmark task {task!r}')
        for res in runners[task](batch):
            results[res['index']] = res
    return [results[it['index']] for it in items]
