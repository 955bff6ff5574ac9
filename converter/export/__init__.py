"""Exporters: write an IR model as ONNX, npz or JSON (each module one format or one concern)."""
