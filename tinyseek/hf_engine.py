"""`tinyseek.hf_engine`, the import path of the transformers engine, which lives in tinyseek/inference/hf_engine.py."""

from tinyseek.inference.hf_engine import HFEngine, HFTokenizer  # noqa: F401
