"""Fused batched implementations of common models (internal; see `batched.py`)."""
