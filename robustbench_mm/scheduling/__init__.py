"""Running the reproduction as a graph of tasks over many GPUs or machines, on Ray (`reproduce --cluster ray`).

graph: which tasks exist and what each waits for (pure); tasks: what one task does, wherever it
runs; shards, corrupt_shards and autoattack_shards: a deformation evaluation, a common-corruption
evaluation, an AutoAttack evaluation, split over test-index ranges and merged; progress: the driver's lines; ray_runner: the Ray driver (Ray is
imported only there, and only when used).
"""
