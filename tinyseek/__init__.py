"""tinyseek: the DeepSeek-V3 / R1 recipe, small enough for a laptop and built to scale."""

__version__ = "0.1.0"
__all__ = ["load_model"]  # the public Python API (DESIGN.md); every other name is imported from its module


def load_model(path, device="cpu", dtype=None):
    """Load a tinyseek checkpoint directory or an exported transformers DeepseekV3 directory as a tinyseek model.

    Calling the model on a LongTensor [B, T] returns an object with `.logits` [B, T, vocab].
    """
    from tinyseek.checkpoint import load_model as _load

    return _load(path, device=device, dtype=dtype)
