"""Exposure-bias toolkit: Chinese BERT/UniLM seq2seq on Keras 3."""

from setuptools import find_packages
from setuptools import setup

setup(
    name="exposure-bias-toolkit",
    version="0.1.0",
    description=(
        "Keras 3 Chinese BERT/UniLM seq2seq with training strategies "
        "against exposure bias, fast decoding and Chinese ROUGE/BLEU."
    ),
    python_requires=">=3.10",
    # Every package but the tests: models, data, weights, tasks (and
    # tasks.lib), compat, and any added later.
    packages=find_packages(exclude=["tests", "tests.*"]),
    # The page tasks/serve.py serves at /.
    package_data={"tasks.lib": ["static/*.html"]},
    install_requires=[
        "keras>=3.6",
        "numpy",
        "safetensors",
        "jieba",
        # SpTokenizer: the tokenizer of mT5 / T5 checkpoints.
        "sentencepiece",
        "rouge",
        "nltk",
        "tqdm",
        "matplotlib",
        # tasks/serve.py: the HTTP server of titles.
        "starlette",
        "uvicorn",
    ],
    # CPU builds for CI and laptops; GPU builds through the ecosystem's own
    # extras (NVIDIA's CUDA libraries as pip packages). tensorflow-cpu and
    # tensorflow install the same module: use one of the two extras.
    extras_require={
        "tensorflow": ["tensorflow-cpu>=2.16"],
        "tensorflow-gpu": ["tensorflow[and-cuda]>=2.16"],
        "jax": ["jax>=0.4.30"],
        "jax-gpu": ["jax[cuda12]>=0.4.30"],
        "jax-cuda13": ["jax[cuda13]>=0.7.2"],
        "torch": ["torch"],
        "test": [
            "pytest",
            "pytest-xdist",
            "transformers",
            "torch",
            "ruff",
            "import-linter",
            # Drives headless Chromium (the server's page) over DevTools.
            "websocket-client",
        ],
    },
)
