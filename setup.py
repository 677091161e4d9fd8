"""Install uno: ``pip install -e ".[tests]"`` in a fresh Python 3.11 venv.

Every dependency is pinned exactly. torch 2.14.1 with torchvision 0.29.1 is
the pair that makes timm import; pip on the project machines finds both
without a download. xformers is CUDA-only and therefore an optional extra
(``.[xformers]``); uno never imports it unless CUDA is present and the
xformers backend is chosen.
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'uno', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


INSTALL_REQUIRES = [
    'torch==2.14.1',
    'torchvision==0.29.1',
    'mmengine==0.10.7',
    'transformers==5.23.0',
    'diffusers==0.42.1',
    'timm==1.0.31',
    'pyyaml==6.0.3',
    'mlflow==3.17.2',
    'safetensors==0.8.0',
    'numpy==2.4.6',
    'pillow==13.0.0',
    'tqdm==4.70.1',
    'matplotlib==3.11.2',
]

EXTRAS_REQUIRE = {
    # gguf + accelerate: transformers' GGUF loading (SmolLM2 test assets)
    # pytest-xdist: setup.cfg runs the tests on two workers
    'tests': ['pytest==9.2.0', 'pytest-xdist==3.8.0', 'gguf==0.19.0',
              'accelerate==1.15.0'],
    # CUDA only: memory_efficient_attention raises on CPU tensors
    'xformers': ['xformers==0.0.35'],
}

setup(
    name='uno',
    version=read_version(),
    description='Understanding-Oriented Post-Training of unified '
    'multimodal models',
    long_description=open('README.md').read()
    if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11,<3.12',
    packages=find_packages(include=['uno', 'uno.*']),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    include_package_data=True,
    zip_safe=False,
)
