"""Analytical counting: formulas (aten op -> FLOPs/MACs), module tracking, the counter."""
