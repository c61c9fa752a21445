"""Built-in synthetic captioned scenes: training shards and CLIP_benchmark-style eval sets.

Public API: `write_train_shards`, `write_eval_sets`, `list_distributions`, `list_eval_tasks`,
`iter_shard_samples` (a tiny tar reader for tests and inspection; training has its own loader).
"""

from clipscale.data.synth.distributions import get_distribution, list_distributions
from clipscale.data.synth.evalsets import list_eval_tasks, write_eval_sets
from clipscale.data.synth.reader import iter_shard_samples
from clipscale.data.synth.train_shards import GENERATOR_VERSION, write_train_shards

__all__ = [
    "GENERATOR_VERSION",
    "get_distribution",
    "iter_shard_samples",
    "list_distributions",
    "list_eval_tasks",
    "write_eval_sets",
    "write_train_shards",
]
