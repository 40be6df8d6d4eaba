"""The speed benchmarks of `tasks/benchmark.py`: one module a subcommand
(`decode`, `padding`, `train`), each with its `add_parser`,
`check_options` and `run`; `arguments` holds what their command lines
share, `flops` counts a training step's FLOPs and measures the device's
matmul peak, `peer` is the PyTorch step that `train` compares against.
"""
