"""The NumPy runtime: an IR model's forward pass with Keras' exact semantics (masking, states, activations)."""

from converter.runtime.graph import Runtime

__all__ = ["Runtime"]
