"""The LLVM CPU backend: loop IR -> llvmlite IR -> machine code through MCJIT."""
