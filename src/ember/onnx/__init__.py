"""ONNX import and export."""

from ember.onnx.export import save as save
from ember.onnx.loader import OnnxModel as OnnxModel
from ember.onnx.loader import load as load
