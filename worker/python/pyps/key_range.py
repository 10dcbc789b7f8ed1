"""The split of the key space over shards, and of examples over workers:
common/key_range.cc's BalancedPart, so every process agrees on it."""


def balanced_part(total, num_parts, index):
    """(begin, end) of part `index` of `num_parts` contiguous, balanced parts
    of [0, total): sizes differ by at most one, the larger parts first."""
    if num_parts <= 0 or not 0 <= index < num_parts:
        raise ValueError(f"part {index} of {num_parts} does not exist")
    base, extra = divmod(total, num_parts)
    begin = index * base + min(index, extra)
    return begin, begin + base + (1 if index < extra else 0)
