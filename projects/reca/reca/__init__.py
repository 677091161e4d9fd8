"""RecA-style reconstruction alignment as a uno training dataset."""
from .reca_dataset import ShapesWorldRecADataset, reca_plan

__all__ = ['ShapesWorldRecADataset', 'reca_plan']
