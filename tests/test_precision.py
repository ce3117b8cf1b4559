"""The one place the compute dtype is decided: "auto" is bf16 only where bf16 is native; the machine line names it."""

from __future__ import annotations

import pytest
import torch

from tinyseek import precision
from tinyseek.errors import TinyseekError


def test_precision_auto_is_bf16_only_where_it_is_native(monkeypatch):
    assert precision.resolve_dtype("float32") == "float32" and precision.resolve_dtype("bfloat16") == "bfloat16"
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda device="cpu", n=native: n)
        assert precision.resolve_dtype("auto") == ("bfloat16" if native else "float32")
    monkeypatch.undo()
    assert isinstance(precision.native_bf16("cpu"), bool)
    line = precision.machine_line()
    assert precision.cpu_name() in line and str(torch.backends.cpu.get_cpu_capability()) in line


def test_dtype_flag():
    assert precision.dtype_arg(None) is None and precision.dtype_arg("bf16") is torch.bfloat16
    with pytest.raises(TinyseekError, match="--dtype"):
        precision.dtype_arg("fp8")
