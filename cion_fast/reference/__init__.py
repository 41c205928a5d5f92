"""Plain-PyTorch references of every op: readable, float64-capable, the baseline of every benchmark
and an oracle in tests. Never used as a silent fallback for the compiled kernels."""
