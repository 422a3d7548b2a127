"""Analytical counting: formulas (aten op -> FLOPs/MACs and op class), module tracking, the counter.

The op taxonomy is asked here, never re-listed elsewhere: :func:`op_class` (the class an op was
registered with, or "view" from its schema), :func:`is_view` (no kernel: left out of op tables)
and :func:`uses_cublas_workspace` (ops that take a cuBLAS workspace on CUDA).
"""

from hwprof.counting.formulas import OP_CLASSES, OpClass, is_view, op_class, uses_cublas_workspace

__all__ = ["OP_CLASSES", "OpClass", "is_view", "op_class", "uses_cublas_workspace"]
