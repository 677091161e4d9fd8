"""Benchmark samples that ``tools/test.py`` turns into metrics.

Unlike training datasets these yield *task dicts*, not sequence plans:
the model generates (images for GenEval prompts and edits, captions for
understanding) inside ``UnoTrainer.predict`` and the metrics in
:mod:`uno.evaluation` score the results. ``ShapesWorldBenchmark`` builds
the three ShapesWorld benchmarks from the test split; ``GenEvalPrompts``
reads any GenEval-schema ``evaluation_metadata.jsonl`` (real GenEval on a
GPU machine, with a tokenizer that covers its words).
"""
from typing import Dict, List, Optional, Sequence, Union

from torch.utils.data import Dataset

from uno.registry import DATASETS, FUNCTIONS
from .builder import build_tokenizer, to_tensor_image
from .shapesworld import ShapesWorld
from .shapesworld.geneval_items import make_geneval_items, read_jsonl

TASKS = ('geneval', 'edit', 'caption')


@FUNCTIONS.register_module()
def list_collate(samples: Sequence[dict]) -> List[dict]:
    """Keep benchmark samples as a list (they are not packed)."""
    return [s for s in samples if s is not None]


@DATASETS.register_module()
class ShapesWorldBenchmark(Dataset):
    """GenEval-schema generation, editing and captioning benchmarks.

    Args:
        tasks (dict): ``task -> size``: ``geneval=dict(n_per_tag=...)``,
            ``edit=dict(num_samples=...)``, ``caption=dict(num_samples=
            ...)``; leave a task out to skip it.
        image_size (int): Render and generation size. Defaults to 32.
        seed (int): World seed (as in training). Defaults to 0.
        tokenizer (dict | object): TOKENIZERS config or instance.
        images_per_prompt (int): GenEval images per prompt. Defaults to 1.
    """

    def __init__(self,
                 tasks: Dict[str, dict],
                 image_size: int = 32,
                 seed: int = 0,
                 tokenizer: Optional[Union[dict, object]] = None,
                 images_per_prompt: int = 1):
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise ValueError(f'unknown benchmark tasks {sorted(unknown)}; '
                             f'expected some of {TASKS}')
        self.world = ShapesWorld(image_size=image_size, seed=seed)
        self.tokenizer = build_tokenizer(tokenizer or
                                         dict(type='WordTokenizer'))
        self.image_size = image_size
        # what mmengine's loops give evaluators as ``dataset_meta``
        self.metainfo = dict(dataset='ShapesWorldBenchmark', seed=seed,
                             image_size=image_size, tasks=sorted(tasks))
        self.items: List[dict] = []
        if 'geneval' in tasks:
            items = make_geneval_items(self.world, split='test', seed=seed,
                                       **tasks['geneval'])
            for meta, _ in items:
                for k in range(images_per_prompt):
                    self.items.append(dict(task='geneval', metadata=meta,
                                           repeat=k))
        if 'edit' in tasks:
            self.items += [dict(task='edit', edit_index=i)
                           for i in range(tasks['edit']['num_samples'])]
        if 'caption' in tasks:
            self.items += [dict(task='caption', scene_index=i)
                           for i in range(tasks['caption']['num_samples'])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.items[index], index=index,
                    image_size=self.image_size)
        tok = self.tokenizer
        if item['task'] == 'geneval':
            item['prompt'] = item['metadata']['prompt']
            item['prompt_ids'] = tok.encode(item['prompt'])
        elif item['task'] == 'edit':
            pair = self.world.edit(item['edit_index'], 'test')
            item.update(pair=pair,
                        instruction_ids=tok.encode(pair.instruction),
                        source=to_tensor_image(
                            self.world.render(pair.source)))
        else:
            scene = self.world.scene(item['scene_index'], 'test')
            reference = self.world.captions(scene)[0]
            item.update(scene=scene, reference=reference,
                        reference_ids=tok.encode(reference),
                        image=to_tensor_image(self.world.render(scene)))
        return item


@DATASETS.register_module()
class GenEvalPrompts(Dataset):
    """Prompts of a GenEval-schema ``evaluation_metadata.jsonl``.

    Args:
        metadata_file (str): The JSONL file.
        tokenizer (dict | object): TOKENIZERS config or instance.
        image_size (int): Generation size. Defaults to 32.
        images_per_prompt (int): Images per prompt (GenEval: 4).
            Defaults to 1.
    """

    def __init__(self, metadata_file: str, tokenizer=None,
                 image_size: int = 32, images_per_prompt: int = 1):
        self.entries = read_jsonl(metadata_file)
        self.tokenizer = build_tokenizer(tokenizer or
                                         dict(type='WordTokenizer'))
        self.image_size, self.repeats = image_size, images_per_prompt
        self.metainfo = dict(dataset='GenEvalPrompts',
                             metadata_file=metadata_file)

    def __len__(self) -> int:
        return len(self.entries) * self.repeats

    def __getitem__(self, index: int) -> dict:
        meta = self.entries[index // self.repeats]
        return dict(task='geneval', index=index, metadata=meta,
                    repeat=index % self.repeats, prompt=meta['prompt'],
                    prompt_ids=self.tokenizer.encode(meta['prompt']),
                    image_size=self.image_size)
