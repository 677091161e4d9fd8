"""Version of the ``uno`` package."""

__version__ = '0.1.0'
