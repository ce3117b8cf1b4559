"""`tinyseek.sampling`, the import path of the sampler, which lives in tinyseek/inference/sampling.py."""

from tinyseek.inference.sampling import (  # noqa: F401
    BatchParams,
    SamplingParams,
    apply_penalties,
    derive_seed,
    inverse_cdf,
    sample,
    sample_reference,
    truncation_mask,
    uniform,
)
