"""Generation: sampling, sequence state and stop rules, tinyseek's engine, the transformers engine, load_engine.

sampling.py    SamplingParams and the counter-based per-row sampler both engines use
sequence.py    one sequence's state, the stop rules, the output text, Completion
engine.py      Engine: tinyseek models on a preallocated KV cache, continuous batching, MTP drafts
hf_engine.py   HFEngine: any transformers causal LM behind the same generate()
load.py        load_engine(path): the engine that serves a checkpoint, directory or .gguf file
"""
