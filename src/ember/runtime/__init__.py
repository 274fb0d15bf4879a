"""The runtime: a compiled graph as a callable (one native call per inference, one arena)."""

from ember.runtime.native import NativeGraph, compile_cached, compile_native

__all__ = ["NativeGraph", "compile_cached", "compile_native"]
