"""Pack :class:`SequencePlan` s into one :class:`PackedBatch`.

The packer is the only place where plans become positions: it lays every
segment's tokens out one after another, assigns RoPE positions (text
increments per token; all tokens of an image or metaquery segment share one
position, as in BAGEL), routes tokens to experts (latent tokens to ``gen``,
everything else to ``und``) and builds the segment-level visibility from
which every attention backend derives its mask.
"""
from typing import Optional, Sequence

import torch

from uno.errors import UnoConfigError
from uno.registry import FUNCTIONS
from .packed_batch import PackedBatch
from .sequence_plan import SequencePlan


def _grid(image: torch.Tensor, stride: int, kind: str):
    if stride <= 0:
        raise ValueError(f'a {kind} segment needs a positive stride to '
                         'count its tokens; set it on the packer')
    h, w = image.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f'image of size {h}x{w} is not divisible by the '
                         f'{kind} stride {stride}')
    return h // stride, w // stride


@FUNCTIONS.register_module()
def pack_sequences(samples: Sequence[Optional[SequencePlan]],
                   latent_stride: int = 8,
                   vit_stride: int = 0,
                   max_tokens: Optional[int] = None) -> PackedBatch:
    """Pack samples into one sequence.

    Args:
        samples (Sequence[SequencePlan | None]): The samples; ``None``
            entries (broken samples a dataset skipped) are dropped.
        latent_stride (int): Pixels per latent token side (VAE downsample
            times latent patch size; the pixel patchifier's patch size).
            Defaults to 8.
        vit_stride (int): Pixels per understanding-encoder token side; 0
            when no sample has ``vit`` segments. Defaults to 0.
        max_tokens (int, optional): Token budget. Samples that would push
            the pack over it are left out (never split); the first sample
            is always kept. Defaults to None (no budget).

    Returns:
        PackedBatch: The packed batch on the CPU.
    """
    samples = [s for s in samples if s is not None]
    if not samples:
        raise ValueError('nothing to pack: every sample of the batch was '
                         'skipped as broken')
    ids, pos, sid, seg_ids = [], [], [], []
    gen_mask, text_mask = [], []
    idx = {k: [] for k in ('noisy', 'clean', 'vit')}
    grp = {k: [] for k in ('noisy', 'clean', 'vit')}
    ppos = {k: [] for k in ('noisy', 'clean', 'vit')}
    img_list = {k: [] for k in ('noisy', 'clean', 'vit', 'mq')}
    ce_index, ce_labels, ce_sample = [], [], []
    query_index, query_slot = [], []
    mq_index, mq_slot, mq_group = [], [], []
    images, seg_full, vis_blocks, meta = [], [], [], []
    n_seg = 0
    for b, plan in enumerate(samples):
        size = _plan_tokens(plan, latent_stride, vit_stride)
        if (max_tokens is not None and b > 0
                and len(ids) + size > max_tokens):
            break
        img_offset = len(images)
        images.extend(plan.images)
        vis_blocks.append(plan.visible())
        meta.append(plan.meta)
        rope = 0
        for s, segment in enumerate(plan.segments):
            g = n_seg + s
            seg_full.append(segment.attn != 'causal')
            start = len(ids)
            kind = segment.kind
            if kind in ('text', 'caption'):
                toks = list(segment.tokens)
                n = len(toks)
                ids.extend(toks)
                pos.extend(range(rope, rope + n))
                rope += n
                gen_mask.extend([False] * n)
                text_mask.extend([True] * n)
                if segment.loss:
                    ce_index.extend(range(start, start + n - 1))
                    ce_labels.extend(toks[1:])
                    ce_sample.extend([b] * (n - 1))
            elif kind == 'metaquery':
                k = segment.num_queries
                ids.extend([0] * k)
                pos.extend([rope] * k)
                rope += 1
                gen_mask.extend([False] * k)
                text_mask.extend([False] * k)
                query_index.extend(range(start, start + k))
                query_slot.extend(range(k))
                if segment.loss:
                    if segment.target_image is None:
                        raise ValueError('a supervised metaquery segment '
                                         'needs target_image')
                    mq_index.extend(range(start, start + k))
                    mq_slot.extend(range(k))
                    mq_group.extend([len(img_list['mq'])] * k)
                    img_list['mq'].append(img_offset + segment.target_image)
            else:
                key = {'noisy_latent': 'noisy', 'clean_latent': 'clean',
                       'vit': 'vit'}[kind]
                stride = vit_stride if key == 'vit' else latent_stride
                image = plan.images[segment.image]
                gh, gw = _grid(image, stride, kind)
                n = gh * gw
                marker = segment.markers is not None
                if marker:
                    ids.append(segment.markers[0])
                    gen_mask.append(False)
                    text_mask.append(True)
                body = len(ids)
                ids.extend([0] * n)
                gen_mask.extend([key != 'vit'] * n)
                text_mask.extend([False] * n)
                idx[key].extend(range(body, body + n))
                grp[key].extend([len(img_list[key])] * n)
                rows = torch.arange(gh).repeat_interleave(gw)
                cols = torch.arange(gw).repeat(gh)
                ppos[key].append(torch.stack([rows, cols], dim=1))
                img_list[key].append(img_offset + segment.image)
                if marker:
                    ids.append(segment.markers[1])
                    gen_mask.append(False)
                    text_mask.append(True)
                total = len(ids) - start
                pos.extend([rope] * total)
                rope += 1
            n_tok = len(ids) - start
            sid.extend([b] * n_tok)
            seg_ids.extend([g] * n_tok)
        n_seg += len(plan.segments)
    num_samples = len(vis_blocks)

    visible = torch.zeros(n_seg, n_seg, dtype=torch.bool)
    off = 0
    for block in vis_blocks:
        n = len(block)
        visible[off:off + n, off:off + n] = torch.tensor(block)
        off += n

    def long(x):
        return torch.as_tensor(x, dtype=torch.long)

    def pos2(key):
        if ppos[key]:
            return torch.cat(ppos[key])
        return torch.zeros(0, 2, dtype=torch.long)

    gen = torch.as_tensor(gen_mask, dtype=torch.bool)
    text = torch.as_tensor(text_mask, dtype=torch.bool)
    if images:
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:  # the pipeline does not crop to one size
            first = {}
            for i, plan in enumerate(meta):
                for im in samples[i].images:
                    first.setdefault(tuple(im.shape), plan.get('image', i))
            raise UnoConfigError(
                'all images of a packed batch must have the same shape; got '
                + ', '.join(f'{s} ({first[s]})' for s in sorted(shapes))
                + ": crop them to one size in the dataset's pipeline, e.g. "
                "dict(type='CenterCrop', size=...) after ResizeToStride")
        stacked = torch.stack(images)
    else:
        stacked = torch.zeros(0, 3, 1, 1)
    return PackedBatch(
        input_ids=long(ids),
        position_ids=long(pos),
        sample_ids=long(sid),
        segment_ids=long(seg_ids),
        segment_full=torch.as_tensor(seg_full, dtype=torch.bool),
        segment_visible=visible,
        und_index=torch.nonzero(~gen).flatten(),
        gen_index=torch.nonzero(gen).flatten(),
        text_index=torch.nonzero(text).flatten(),
        noisy_index=long(idx['noisy']),
        noisy_group=long(grp['noisy']),
        noisy_pos=pos2('noisy'),
        clean_index=long(idx['clean']),
        clean_group=long(grp['clean']),
        clean_pos=pos2('clean'),
        vit_index=long(idx['vit']),
        vit_group=long(grp['vit']),
        vit_pos=pos2('vit'),
        ce_index=long(ce_index),
        ce_labels=long(ce_labels),
        ce_sample=long(ce_sample),
        query_index=long(query_index),
        query_slot=long(query_slot),
        mq_index=long(mq_index),
        mq_slot=long(mq_slot),
        mq_group=long(mq_group),
        images=stacked,
        noisy_images=long(img_list['noisy']),
        clean_images=long(img_list['clean']),
        vit_images=long(img_list['vit']),
        mq_images=long(img_list['mq']),
        num_samples=num_samples,
        meta=meta)


def _plan_tokens(plan: SequencePlan, latent_stride: int,
                 vit_stride: int) -> int:
    """Number of tokens ``plan`` occupies once packed."""
    total = 0
    for seg in plan.segments:
        if seg.kind in ('text', 'caption'):
            total += len(seg.tokens)
        elif seg.kind == 'metaquery':
            total += seg.num_queries
        else:
            stride = vit_stride if seg.kind == 'vit' else latent_stride
            gh, gw = _grid(plan.images[seg.image], stride, seg.kind)
            total += gh * gw + (2 if seg.markers is not None else 0)
    return total
