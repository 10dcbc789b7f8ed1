"""Data helpers that match ps_worker's, so C++ and Python workers of one
job train on disjoint parts of the same data."""

from pyps.key_range import balanced_part


def shard(n, rank, num_workers):
    """The examples of worker `rank` of `num_workers` among `n`: a range,
    the same one ps_worker trains on (worker/trainer.cc)."""
    if num_workers <= 0 or not 0 <= rank < num_workers:
        raise ValueError(
            f"rank {rank} must be in [0, num_workers={num_workers})")
    return range(*balanced_part(n, num_workers, rank))
