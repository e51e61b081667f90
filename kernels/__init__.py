"""Fused Triton kernels, each beside a plain-PyTorch reference with the same signature."""
