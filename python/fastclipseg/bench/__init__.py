"""Benchmark helpers, outside the inference path: `suite` (what `fastclipseg bench` runs: the
transformers reference and fastclipseg's backends timed in turns), `measure` (interleaved medians,
peak memory, machine facts, result files, synthetic images and videos) and `flops` (the stages'
floating-point work and the hardware's matmul rate). The scripts in `benchmarks/` use them too."""
