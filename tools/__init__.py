"""Benchmarks, the fault suite and the test infrastructure an operator does not need:
network-namespace labs (``tools.netns``), timings read from a sentinel configuration
(``tools.timings``). Importable as ``tools.x`` from the checkout; each script run directly
puts the checkout on ``sys.path`` first."""
