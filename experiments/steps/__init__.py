"""The Shakespeare pipeline's wiring for the Python step front (experiments/llama_steps.py uses it).

One module per stage, each with its config dataclass (the output path a field), the plain
function over it that calls `mllib` (library code, no mbuild imports), that function made
`deferred`, and the `@step` function building the config from `StepRef`s and `output()`.
The stage modules never import each other, so a comment in one reruns only its step (and early
cutoff stops there: its outputs are the same bytes). The BUILD-file front of the same pipeline
is rules/llm/ with experiments/BUILD.py.
"""
