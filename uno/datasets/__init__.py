"""Datasets, tokenizers, transforms, and the sequence packer and plan
builders of :mod:`uno.structures` re-exported.

Importing this package registers every dataset (DATASETS), the packers
(FUNCTIONS: ``pack_sequences``, ``pack_and_count``), the transforms
(TRANSFORMS) and the tokenizers (TOKENIZERS).
"""
from . import shapesworld
from .benchmarks import GenEvalPrompts, ShapesWorldBenchmark, list_collate
from .builder import build_tokenizer, to_tensor_image, to_uint8_image
from .collate import count_broken, pack_and_count
from .file_datasets import EditDataset, ImageCaptionDataset
from .jsonl_base import BrokenSampleError, JsonlImageDataset
from .mixture import MixtureDataset
from uno.structures.packing import pack_sequences
from uno.structures.plans import (UnoPlanOptions, caption_plan, edit_plan,
                                  t2i_plan, text_segment, uno_segments)
from .shapesworld_t2i import ShapesWorldT2IDataset
from .shapesworld_tasks import (ShapesWorldCaptionDataset,
                                ShapesWorldEditDataset)
from .tokenizer import WordTokenizer
from .transforms import (CenterCrop, Pipeline, RandomCrop,
                         RandomHorizontalFlip, ResizeToStride, ToTensorImage,
                         build_pipeline)

__all__ = [
    'shapesworld', 'pack_sequences', 'pack_and_count', 'count_broken',
    'ShapesWorldT2IDataset', 'ShapesWorldCaptionDataset',
    'ShapesWorldEditDataset', 'MixtureDataset', 'ImageCaptionDataset',
    'EditDataset',
    'JsonlImageDataset', 'BrokenSampleError', 'WordTokenizer',
    'build_tokenizer', 'to_tensor_image', 'to_uint8_image', 't2i_plan',
    'text_segment', 'edit_plan', 'caption_plan', 'uno_segments',
    'UnoPlanOptions', 'ResizeToStride', 'CenterCrop', 'RandomCrop',
    'RandomHorizontalFlip', 'ToTensorImage', 'Pipeline', 'build_pipeline',
    'ShapesWorldBenchmark', 'GenEvalPrompts', 'list_collate'
]
