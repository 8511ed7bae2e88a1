"""Jupyter widgets: the kernel-streamed tile layer, the prediction layer and the panel. Thin over core."""
