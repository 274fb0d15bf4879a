"""Code generation backends: `llvm` for the host CPU (and later `cuda`)."""
