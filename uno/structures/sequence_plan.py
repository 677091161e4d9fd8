"""SequencePlan: what each segment of a training sample is.

A sample is an ordered list of :class:`Segment` s. Each segment says what
its tokens are (``kind``), how it attends (``attn``), which earlier segments
of the same sample it may read (``sees``) and whether it feeds a loss. The
packer (:mod:`uno.structures.packing`) turns plans into one packed sequence
with per-expert and per-objective index tensors and the attention rules;
the mask is derived from the plan, never hand-written at a call site.

Token layout per kind (``M`` = marker text tokens, read by the und expert):

===============  ==================================  =======  ==========
kind             tokens                              expert   attn
===============  ==================================  =======  ==========
text             ``<bos> w1 .. wn <eos>``            und      causal
caption          ``<bos> w1 .. wn <eos>``            und      causal
vit              ``M  vit tokens  M``                und      full
clean_latent     ``M  latent tokens  M``             gen      full
noisy_latent     ``M  latent tokens  M``             gen      noise
metaquery        ``q1 .. qK``                        und      full
===============  ==================================  =======  ==========

Visibility: by default a segment sees every earlier segment of its sample
except ``noise`` segments (BAGEL's rule: the noisy image is invisible to
everything outside it). A segment with an explicit ``sees`` tuple sees
exactly those earlier segments: that is how UNO's caption and metaquery
segments read the noisy latents but not the prompt (prompt masking).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

TEXT_KINDS = ('text', 'caption')
IMAGE_KINDS = ('vit', 'clean_latent', 'noisy_latent')
SEGMENT_KINDS = TEXT_KINDS + IMAGE_KINDS + ('metaquery', )
ATTN_MODES = ('causal', 'full', 'noise')
DEFAULT_ATTN = dict(
    text='causal',
    caption='causal',
    vit='full',
    clean_latent='full',
    noisy_latent='noise',
    metaquery='full')


@dataclass
class Segment:
    """One segment of a sample's sequence.

    Args:
        kind (str): One of :data:`SEGMENT_KINDS`.
        tokens (list[int], optional): Token ids of a text/caption segment,
            including ``<bos>``/``<eos>``. Defaults to None.
        image (int, optional): Index into :attr:`SequencePlan.images` for
            image kinds. Defaults to None.
        markers (tuple[int, int], optional): ``(<vision_start>,
            <vision_end>)`` ids wrapped around an image's tokens; None for
            no markers. Defaults to None.
        num_queries (int): Number of metaquery tokens. Defaults to 0.
        attn (str, optional): ``causal``, ``full`` or ``noise``. Defaults to
            the kind's default (:data:`DEFAULT_ATTN`).
        sees (tuple[int, ...], optional): Indices of the earlier segments
            of this sample that this one may attend to; None for the
            default rule. Defaults to None.
        loss (bool): Whether the segment is supervised (CE on text, flow on
            noisy latents, regression on metaqueries). Defaults to False.
        target_image (int, optional): For metaqueries, the image whose
            features they regress. Defaults to None.
    """
    kind: str
    tokens: Optional[List[int]] = None
    image: Optional[int] = None
    markers: Optional[Tuple[int, int]] = None
    num_queries: int = 0
    attn: Optional[str] = None
    sees: Optional[Tuple[int, ...]] = None
    loss: bool = False
    target_image: Optional[int] = None

    def __post_init__(self):
        if self.kind not in SEGMENT_KINDS:
            raise ValueError(f'unknown segment kind {self.kind!r}; '
                             f'expected one of {SEGMENT_KINDS}')
        if self.attn is None:
            self.attn = DEFAULT_ATTN[self.kind]
        if self.attn not in ATTN_MODES:
            raise ValueError(f'unknown attention mode {self.attn!r}')
        if self.kind in TEXT_KINDS and not self.tokens:
            raise ValueError(f'a {self.kind} segment needs tokens')
        if self.kind in IMAGE_KINDS and self.image is None:
            raise ValueError(f'a {self.kind} segment needs an image index')
        if self.kind == 'metaquery' and self.num_queries <= 0:
            raise ValueError('a metaquery segment needs num_queries > 0')


@dataclass
class SequencePlan:
    """A sample: its segments and the images they refer to.

    Args:
        segments (list[Segment]): The segments, in sequence order.
        images (list[Tensor]): Images referenced by image segments, each
            ``(3, H, W)`` in ``[-1, 1]``.
        meta (dict): Anything the evaluators want back (scene, prompt...).
    """
    segments: List[Segment]
    images: List[torch.Tensor] = field(default_factory=list)
    meta: Dict = field(default_factory=dict)

    def __post_init__(self):
        for i, seg in enumerate(self.segments):
            for j in seg.sees or ():
                if not 0 <= j < i:
                    raise ValueError(
                        f'segment {i} ({seg.kind}) sees segment {j}, '
                        'which is not an earlier segment of the sample')
            for img in (seg.image, seg.target_image):
                if img is not None and not 0 <= img < len(self.images):
                    raise ValueError(f'segment {i} refers to image {img} '
                                     f'but the plan has {len(self.images)}')

    def visible(self) -> List[List[bool]]:
        """Segment-level visibility: ``vis[q][k]`` for ``k <= q``.

        A segment always sees itself (causally or fully, by its ``attn``).
        """
        n = len(self.segments)
        vis = [[False] * n for _ in range(n)]
        for q, seg in enumerate(self.segments):
            vis[q][q] = True
            if seg.sees is not None:
                for k in seg.sees:
                    vis[q][k] = True
            else:
                for k in range(q):
                    vis[q][k] = self.segments[k].attn != 'noise'
        return vis

    def kinds(self) -> Sequence[str]:
        return [s.kind for s in self.segments]
