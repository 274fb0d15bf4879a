"""ONNX import and export."""

from ember.onnx.export import save as save
