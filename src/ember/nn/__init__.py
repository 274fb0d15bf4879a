"""`ember.nn`: layers with PyTorch's names and arguments; see `ember.nn.layers` for the list."""

from ember.nn import functional, init
from ember.nn.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    GELU,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from ember.nn.module import Buffer, Module, Parameter

__all__ = [
    "GELU", "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Buffer", "Conv2d", "Dropout",
    "Embedding", "Flatten", "Identity", "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax",
    "MaxPool2d", "Module", "Parameter", "ReLU", "SiLU", "Sequential", "Sigmoid", "Softmax", "Tanh",
    "functional", "init",
]
