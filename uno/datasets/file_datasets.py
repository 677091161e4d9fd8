"""Image-caption and edit datasets read from a JSONL file and image files.

One JSON object per line names the image files (relative to ``data_root``)
and their text. Bad samples (missing or corrupt images, malformed lines)
are skipped and counted, never fatal below a threshold: see
:class:`~uno.datasets.jsonl_base.JsonlImageDataset`.
"""
from typing import List, Optional, Union

from uno.registry import DATASETS
from uno.structures import SequencePlan
from .jsonl_base import BrokenSampleError, JsonlImageDataset, text_list
from uno.structures.plans import (caption_plan, edit_plan, t2i_plan,
                                  uno_segments)


@DATASETS.register_module()
class ImageCaptionDataset(JsonlImageDataset):
    """Text-to-image or captioning samples from ``(image, caption)`` pairs.

    Each JSONL line: ``{"image": "relative/path.png", "caption": str or
    [str, ...], "prompt": str (optional)}``.

    * ``task='t2i'``: ``[prompt, noisy image]`` (:func:`t2i_plan`). The
      conditioning text is ``prompt`` if given, else a caption drawn from
      the list; it is dropped (empty) with probability ``prompt_dropout``.
      With ``uno`` options, the UNO caption (another draw from the list,
      independent of the prompt) and metaqueries follow, exactly as in
      :class:`~uno.datasets.ShapesWorldT2IDataset`.
    * ``task='caption'``: ``[image, (caption_prompt), caption]``
      (:func:`caption_plan`); ``uno`` options do not apply.

    Args:
        ann_file (str): JSONL file.
        data_root (str, optional): Image root. Defaults to None (the
            annotation file's directory).
        pipeline (list[dict], optional): TRANSFORMS configs. Defaults to
            None.
        tokenizer (dict | object, optional): TOKENIZERS config or instance.
            Defaults to ``dict(type='WordTokenizer')``.
        task (str): ``'t2i'`` or ``'caption'``. Defaults to ``'t2i'``.
        prompt_dropout (float): Probability of an empty prompt (t2i).
            Defaults to 0.1.
        caption_prompt (str, optional): Text placed before the caption in
            the caption task (e.g. ``'describe the image.'``). Defaults to
            None.
        latent (bool): Caption task: show the image as clean latents (gen
            expert) instead of ViT tokens. Defaults to False.
        uno (dict, optional): UNO plan options. Defaults to None.
        max_broken_fraction (float): Raise once more than this fraction
            of the samples read were broken. Defaults to 0.1.
        min_samples_for_threshold (int): Reads before the threshold is
            checked. Defaults to 50.
        max_refetch (int): Following indices tried in place of a broken
            sample (0: return None). Defaults to 0.
        seed (int): Seed of the per-sample choices. Defaults to 0.
        max_text_tokens (int): A text of more tokens is a broken sample.
            Defaults to 1024.
    """

    required_keys = ('image', 'caption')

    def __init__(self,
                 ann_file: str,
                 data_root: Optional[str] = None,
                 pipeline: Optional[List[dict]] = None,
                 tokenizer: Optional[Union[dict, object]] = None,
                 task: str = 't2i',
                 prompt_dropout: float = 0.1,
                 caption_prompt: Optional[str] = None,
                 latent: bool = False,
                 uno: Optional[dict] = None,
                 max_broken_fraction: float = 0.1,
                 min_samples_for_threshold: int = 50,
                 max_refetch: int = 0,
                 seed: int = 0,
                 max_text_tokens: int = 1024):
        if task not in ('t2i', 'caption'):
            raise ValueError(f"task must be 't2i' or 'caption', got {task!r}")
        if not 0 <= prompt_dropout <= 1:
            raise ValueError('prompt_dropout must be in [0, 1]')
        self.task, self.prompt_dropout = task, prompt_dropout
        self.caption_prompt, self.latent = caption_prompt, latent
        super().__init__(ann_file, data_root, pipeline, tokenizer, uno,
                         max_broken_fraction, min_samples_for_threshold,
                         max_refetch, seed, max_text_tokens)

    def build_plan(self, index: int, record: dict) -> SequencePlan:
        captions = text_list(record['caption'], 'caption')
        image = self.load_image(record['image'])
        tensor = self.transform(dict(image=image), index,
                                record['image'])['image']  # (3, H, W)
        rng = self.text_rng(index)
        tok = self.tokenizer
        if self.task == 'caption':
            caption = captions[rng.integers(len(captions))]
            prompt = (self.encode(self.caption_prompt)
                      if self.caption_prompt else None)
            segments = caption_plan(self.encode(caption), tok, prompt=prompt,
                                    latent=self.latent)
            meta = dict(prompt=self.caption_prompt, dropped=False)
        else:
            text = record.get('prompt')
            if not isinstance(text, str):
                text = captions[rng.integers(len(captions))]
            dropped = bool(rng.random() < self.prompt_dropout)
            segments = t2i_plan([] if dropped else self.encode(text), tok)
            caption = None
            if self.uno.enabled:
                # a phrasing of the image, drawn independently of the prompt
                caption = captions[rng.integers(len(captions))]
                segments += uno_segments(
                    noisy=1, caption=self.encode(caption), tokenizer=tok,
                    options=self.uno, target_image=0,
                    first_index=len(segments))
            meta = dict(prompt=text, dropped=dropped)
        meta.update(index=index, image=record['image'], caption=caption)
        return SequencePlan(segments=segments, images=[tensor], meta=meta)


@DATASETS.register_module()
class EditDataset(JsonlImageDataset):
    """Image-editing samples: ``(source, instruction) -> target``.

    Each JSONL line: ``{"source": path, "target": path, "instruction":
    str, "target_caption": str or [str, ...] (optional)}``. The plan is
    BAGEL's :func:`edit_plan` ``[clean source latents, (source ViT),
    instruction, noisy target]``, followed with ``uno`` options by the UNO
    caption (of the *target*, from ``target_caption``) and metaqueries
    regressing the target's features. Source and target go through the
    pipeline together (same resize, crop and flip).

    Args:
        ann_file (str): JSONL file.
        data_root (str, optional): Image root. Defaults to None (the
            annotation file's directory).
        pipeline (list[dict], optional): TRANSFORMS configs. Defaults to
            None.
        tokenizer (dict | object, optional): TOKENIZERS config or instance.
            Defaults to ``dict(type='WordTokenizer')``.
        vit (bool): Include the source's ViT tokens (needs a model with an
            und_encoder and ``vit_stride`` on the packer). Defaults to True.
        instruction_dropout (float): Probability of an empty instruction
            (for classifier-free guidance). Defaults to 0.1.
        uno (dict, optional): UNO plan options; UNO captioning needs
            ``target_caption`` (a record without it is a broken sample).
            Defaults to None.
        max_broken_fraction (float): Raise once more than this fraction
            of the samples read were broken. Defaults to 0.1.
        min_samples_for_threshold (int): Reads before the threshold is
            checked. Defaults to 50.
        max_refetch (int): Following indices tried in place of a broken
            sample (0: return None). Defaults to 0.
        seed (int): Seed of the per-sample choices. Defaults to 0.
        max_text_tokens (int): A text of more tokens is a broken sample.
            Defaults to 1024.
    """

    required_keys = ('source', 'target', 'instruction')

    def __init__(self,
                 ann_file: str,
                 data_root: Optional[str] = None,
                 pipeline: Optional[List[dict]] = None,
                 tokenizer: Optional[Union[dict, object]] = None,
                 vit: bool = True,
                 instruction_dropout: float = 0.1,
                 uno: Optional[dict] = None,
                 max_broken_fraction: float = 0.1,
                 min_samples_for_threshold: int = 50,
                 max_refetch: int = 0,
                 seed: int = 0,
                 max_text_tokens: int = 1024):
        if not 0 <= instruction_dropout <= 1:
            raise ValueError('instruction_dropout must be in [0, 1]')
        self.vit, self.instruction_dropout = vit, instruction_dropout
        super().__init__(ann_file, data_root, pipeline, tokenizer, uno,
                         max_broken_fraction, min_samples_for_threshold,
                         max_refetch, seed, max_text_tokens)
        if self.uno.caption and not any(
                isinstance(r, dict) and 'target_caption' in r
                for r in self.records):
            raise ValueError(f'UNO captioning needs target_caption, which '
                             f'no record of {self.ann_file} has')

    def build_plan(self, index: int, record: dict) -> SequencePlan:
        instruction = record['instruction']
        if not isinstance(instruction, str):
            raise BrokenSampleError(record['source'],
                                    'instruction must be a string')
        caption = None
        rng = self.text_rng(index)
        if self.uno.caption:
            if 'target_caption' not in record:
                raise BrokenSampleError(record['target'],
                                        'no target_caption for UNO '
                                        'captioning')
            options = text_list(record['target_caption'], 'target_caption')
            caption = options[rng.integers(len(options))]
        images = dict(image=self.load_image(record['source']),
                      target=self.load_image(record['target']))
        out = self.transform(images, index, record['source'])
        dropped = bool(rng.random() < self.instruction_dropout)
        tok = self.tokenizer
        segments = edit_plan([] if dropped else self.encode(instruction),
                             tok, source=0, target=1, vit=self.vit)
        if self.uno.enabled:
            segments += uno_segments(
                noisy=len(segments) - 1,
                caption=None if caption is None else self.encode(caption),
                tokenizer=tok, options=self.uno, target_image=1,
                first_index=len(segments))
        meta = dict(index=index, source=record['source'],
                    target=record['target'], instruction=instruction,
                    caption=caption, dropped=dropped)
        return SequencePlan(segments=segments,
                            images=[out['image'], out['target']], meta=meta)
