"""Base of the JSONL-backed datasets: parsing, image loading, bad samples.

A bad sample never stops a run: a missing or undecodable image, a malformed
or non-UTF-8 line, a text above ``max_text_tokens`` or a record without
its required keys makes ``__getitem__`` return ``None`` (which
:func:`~uno.datasets.pack_sequences` drops and
:func:`~uno.datasets.collate.pack_and_count` counts into the batch's
``broken`` count), increments the dataset's broken counter and logs a
warning naming the file and the reason (the first 10, then every 100th).
A record whose fields have the wrong type (a number for an image path)
is a bad sample too. Only when the broken fraction exceeds
``max_broken_fraction`` (after ``min_samples_for_threshold`` reads) does
the dataset stop the run (:class:`~uno.errors.TrainingStopped`, one
line from the tools): at that point the data, not a few files, is wrong.

The counters live on the dataset object, i.e. per process: with dataloader
workers each worker counts (and checks the threshold on) the samples it
reads, and the main process learns the totals from the batches
(:class:`~uno.engine.hooks.BrokenSampleHook`).
"""
import json
import logging
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log
from PIL import Image
from torch.utils.data import Dataset

from uno.structures import SequencePlan
from uno.structures.plans import UnoPlanOptions
from uno.errors import TrainingStopped, UnoConfigError
from .builder import build_tokenizer, to_tensor_image
from .transforms import as_rgb_array, build_pipeline, image_keys

#: Broken samples logged one by one before switching to every 100th.
LOG_FIRST = 10
LOG_EVERY = 100


class BrokenSampleError(Exception):
    """A sample that cannot be read (caught inside ``__getitem__``)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path}: {reason}')
        self.path, self.reason = path, reason


def text_list(value, key: str) -> List[str]:
    """A str or non-empty list of str as a list; else a broken sample."""
    if isinstance(value, str):
        return [value]
    if (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, str) for v in value)):
        return list(value)
    raise BrokenSampleError(key, f'{key!r} must be a string or a non-empty '
                            f'list of strings, got {value!r:.60}')


class JsonlImageDataset(Dataset):
    """Shared machinery: JSONL parsing, image loading, broken samples.

    Subclasses set :attr:`required_keys` and implement :meth:`build_plan`.

    Args:
        ann_file (str): JSONL annotation file; looked up below
            ``data_root`` too when it does not exist as given.
        data_root (str, optional): Directory image paths are relative to.
            Defaults to None: the annotation file's directory.
        pipeline (list[dict], optional): TRANSFORMS configs applied to the
            images (see :mod:`uno.datasets.transforms`); images that are
            not tensors at its end are converted with ``ToTensorImage``.
            Defaults to None (conversion only).
        tokenizer (dict | object, optional): TOKENIZERS config or instance.
            Defaults to ``dict(type='WordTokenizer')``.
        uno (dict, optional): :class:`UnoPlanOptions` for the UNO segments
            after a noisy image; filled by ``build_runner`` from the
            objectives when left out. Defaults to None.
        max_broken_fraction (float): Raise once more than this fraction of
            the samples read were broken. 1.0 never raises. Defaults to
            0.1.
        min_samples_for_threshold (int): Reads before the threshold is
            checked. Defaults to 50.
        max_refetch (int): When a sample is broken, try up to this many
            following indices and return the first good one (its
            ``meta['broken_skipped']`` says how many were skipped), so a
            batch never comes out empty. 0 returns None. Defaults to 0.
        seed (int): Seed of the per-sample text choices and augmentations
            (each index draws from ``default_rng([seed, index])``).
            Defaults to 0.
        max_text_tokens (int): A caption, prompt or instruction of more
            tokens is a broken sample (a packed sequence's attention grows
            with the square of its length). Defaults to 1024.
    """

    #: Keys every record must have.
    required_keys: Sequence[str] = ()

    def __init__(self,
                 ann_file: str,
                 data_root: Optional[str] = None,
                 pipeline: Optional[List[dict]] = None,
                 tokenizer: Optional[Union[dict, object]] = None,
                 uno: Optional[dict] = None,
                 max_broken_fraction: float = 0.1,
                 min_samples_for_threshold: int = 50,
                 max_refetch: int = 0,
                 seed: int = 0,
                 max_text_tokens: int = 1024):
        if not 0 <= max_broken_fraction <= 1:
            raise ValueError('max_broken_fraction must be in [0, 1], got '
                             f'{max_broken_fraction}')
        if max_refetch < 0:
            raise ValueError(f'max_refetch must be >= 0, got {max_refetch}')
        self.ann_file = self._resolve_ann_file(ann_file, data_root)
        self.data_root = (data_root if data_root is not None else
                          osp.dirname(osp.abspath(self.ann_file)))
        self.max_broken_fraction = max_broken_fraction
        self.min_samples_for_threshold = min_samples_for_threshold
        self.max_refetch, self.seed = max_refetch, seed
        self.max_text_tokens = max_text_tokens
        self.pipeline = build_pipeline(pipeline)
        self.tokenizer = build_tokenizer(tokenizer or
                                         dict(type='WordTokenizer'))
        self.uno = UnoPlanOptions.build(uno)
        self.num_broken = 0  # broken reads in this process
        self.num_read = 0  # all reads in this process
        self.records = self._load_records()
        # read by mmengine's Runner (the visualizer's dataset_meta)
        self.metainfo = dict(ann_file=self.ann_file, data_root=self.data_root)

    # --- annotations -------------------------------------------------------
    @staticmethod
    def _resolve_ann_file(ann_file: str, data_root: Optional[str]) -> str:
        if osp.isfile(ann_file):
            return ann_file
        if data_root and osp.isfile(osp.join(data_root, ann_file)):
            return osp.join(data_root, ann_file)
        if osp.isdir(ann_file):
            raise UnoConfigError(f'annotation file {ann_file} is a folder; '
                                 'ann_file must name a JSONL file')
        where = f' (nor below data_root {data_root})' if data_root else ''
        raise UnoConfigError(f'annotation file {ann_file} does not '
                             f'exist{where}')

    def _load_records(self) -> List[Union[dict, BrokenSampleError]]:
        """Parsed records; a bad line becomes a BrokenSampleError entry."""
        records = []
        with open(self.ann_file, 'rb') as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f'{self.ann_file}:{line_no}'
                try:
                    line = line.decode('utf-8')
                except UnicodeDecodeError as e:
                    records.append(BrokenSampleError(
                        where, f'not UTF-8 text ({e.reason} at byte '
                        f'{e.start})'))
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    records.append(BrokenSampleError(
                        where, f'malformed JSON line ({e})'))
                    continue
                if not isinstance(record, dict):
                    records.append(BrokenSampleError(
                        where, 'a line must hold a JSON object'))
                    continue
                missing = [k for k in self.required_keys if k not in record]
                if missing:
                    records.append(BrokenSampleError(
                        where, f'missing key(s) {missing}'))
                    continue
                records.append(record)
        bad = sum(isinstance(r, BrokenSampleError) for r in records)
        if len(records) == bad:
            raise UnoConfigError(
                f'{self.ann_file} holds no valid sample ({bad} bad lines); '
                f'each line must be a UTF-8 JSON object with keys '
                f'{list(self.required_keys)}')
        if len(records) >= self.min_samples_for_threshold and (
                bad / len(records) > self.max_broken_fraction):
            raise TrainingStopped(self._threshold_message(bad, len(records)))
        return records

    def __len__(self) -> int:
        return len(self.records)

    # --- reading -----------------------------------------------------------
    def load_image(self, path: str) -> Image.Image:
        """Decode ``data_root/path`` fully, as RGB.

        Raises:
            BrokenSampleError: On a missing file or any decoding error.
        """
        full = path if osp.isabs(path) else osp.join(self.data_root, path)
        if not osp.isfile(full):
            raise BrokenSampleError(full, 'no such file')
        try:
            with Image.open(full) as image:
                return image.convert('RGB')  # forces the full decode
        except Exception as e:  # any decoder error is this file's fault
            raise BrokenSampleError(full, f'cannot decode image: '
                                    f'{type(e).__name__}: {e}') from e

    def transform(self, images: Dict[str, Image.Image], index: int,
                  path: str) -> Dict[str, torch.Tensor]:
        """Run the pipeline on ``images`` (same random draws for all).

        Returns:
            dict[str, Tensor]: Each key as a ``(3, H, W)`` tensor in
            ``[-1, 1]``.
        """
        results = dict(images, image_keys=tuple(images),
                       rng=np.random.default_rng([self.seed, index, 1]))
        try:
            results = self.pipeline(results)
            if results is None:
                raise BrokenSampleError(path, 'filtered out by the pipeline')
            out = {}
            for key in image_keys(results):
                image = results[key]
                if not isinstance(image, torch.Tensor):
                    image = to_tensor_image(as_rgb_array(image))
                out[key] = image
        except (ValueError, OSError) as e:  # e.g. an image below a crop
            raise BrokenSampleError(path, f'{type(e).__name__}: {e}') from e
        shapes = {tuple(v.shape) for v in out.values()}
        if len(shapes) > 1:
            raise BrokenSampleError(path, f'images of the sample differ in '
                                    f'size after the pipeline: {shapes}')
        return out

    def text_rng(self, index: int) -> np.random.Generator:
        """Generator of the text choices of sample ``index``."""
        return np.random.default_rng([self.seed, index])

    def encode(self, text: str) -> List[int]:
        ids = self.tokenizer.encode(text)
        if len(ids) > self.max_text_tokens:  # its attention would not fit
            raise BrokenSampleError(
                f'{text[:40]!r}...', f'a text of {len(ids)} tokens, above '
                f'max_text_tokens={self.max_text_tokens}')
        return ids

    def build_plan(self, index: int, record: dict) -> SequencePlan:
        """The plan of one record; raise BrokenSampleError on bad data."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Optional[SequencePlan]:
        skipped = 0
        for attempt in range(self.max_refetch + 1):
            i = (index + attempt) % len(self.records)
            record = self.records[i]
            self.num_read += 1
            error = record if isinstance(record, BrokenSampleError) else None
            if error is None:
                try:
                    plan = self.build_plan(i, record)
                except BrokenSampleError as e:
                    error = e
                except (TypeError, AttributeError) as e:  # a field's type
                    error = BrokenSampleError(
                        f'{self.ann_file} record {i}',
                        f'a field of the wrong type ({e})')
            if error is not None:
                skipped += 1
                self._report_broken(i, error)
                continue
            plan.meta['broken_skipped'] = skipped
            return plan
        return None

    # --- broken samples ----------------------------------------------------
    @property
    def broken_stats(self) -> Dict[str, int]:
        """``dict(broken=..., read=...)`` counted in this process."""
        return dict(broken=self.num_broken, read=self.num_read)

    def _report_broken(self, index: int, error: BrokenSampleError) -> None:
        self.num_broken += 1
        n = self.num_broken
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            more = (f'; further ones are logged every {LOG_EVERY}th'
                    if n == LOG_FIRST else '')
            print_log(
                f'{type(self).__name__}: skipped broken sample {index} '
                f'({error.path}): {error.reason} [{n} broken of '
                f'{self.num_read} read{more}]',
                logger='current',
                level=logging.WARNING)
        if (self.num_read >= self.min_samples_for_threshold
                and n / self.num_read > self.max_broken_fraction):
            raise TrainingStopped(self._threshold_message(n, self.num_read))

    def _threshold_message(self, broken: int, total: int) -> str:
        return (f'{broken} of {total} samples were broken '
                f'({100 * broken / total:.1f}%), above max_broken_fraction='
                f'{self.max_broken_fraction}; check data_root '
                f'{self.data_root} and ann_file {self.ann_file} (the '
                'warnings above name the files and reasons)')
