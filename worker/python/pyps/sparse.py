"""Sparse tables in pyps: their declaration, the checks of keys and rows,
and where a key's row lives (common/key_range.h's ShardOfId, vectorised)."""

import dataclasses

import numpy as np

from ps.v1 import parameter_server_pb2 as pb

_WIRE_KEY = np.dtype("<u8")
_WIRE_FLOAT = np.dtype("<f4")

# common/splitmix64.h's constants. The hash is fixed by the file format: a
# key's shard here must be the one the servers check it against.
_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclasses.dataclass(frozen=True)
class Table:
    """A sparse table of the model (proto TableSpec): rows of `dim` float32
    keyed by any uint64 feature id, created on the servers at first update.
    initializer: "zeros", "uniform(A)" or "normal(SIGMA)"; optimizer and
    lr_schedule in ps_server's --optimizer and --lr_schedule syntax (empty:
    the server's flags)."""
    name: str
    dim: int
    initializer: str = "zeros"
    optimizer: str = ""
    lr_schedule: str = ""

    def to_proto(self):
        return pb.TableSpec(name=self.name, dim=self.dim,
                            initializer=self.initializer,
                            optimizer=self.optimizer,
                            lr_schedule=self.lr_schedule)


def splitmix64(ids):
    """SplitMix64 of each uint64 in `ids` (common/splitmix64.h)."""
    z = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the arithmetic is mod 2^64
        z = z + _GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def shard_of_ids(ids, num_shards):
    """The shard each id's row lives on: SplitMix64(id) mod num_shards."""
    return (splitmix64(ids) % np.uint64(num_shards)).astype(np.int64)


def checked_tables(tables):
    """`tables` (Table objects or dicts of Table's fields) as Tables, with
    the mistakes a server would refuse named before anything is sent."""
    out = []
    for table in tables:
        if isinstance(table, dict):
            table = Table(**table)
        if not isinstance(table, Table):
            raise ValueError(f"a table is declared as pyps.Table(name, dim, "
                             f"...), not {type(table).__name__}")
        if not table.name:
            raise ValueError("a table needs a name")
        if isinstance(table.dim, bool) or not isinstance(
                table.dim, (int, np.integer)) or not 1 <= table.dim <= 1 << 16:
            raise ValueError(f"table '{table.name}' has dim={table.dim!r}; "
                             "it must be an integer in [1, 65536]")
        out.append(table)
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(f"table names repeat: {names}")
    return out


def checked_keys(keys, table):
    """`keys` as a 1-D little-endian uint64 array. Unsigned or non-negative
    signed integers are taken (a torch int64 tensor's values, say)."""
    array = np.asarray(keys)
    if array.ndim != 1:
        raise ValueError(f"the keys of table '{table}' have shape "
                         f"{array.shape}; a 1-D array of feature ids is "
                         "needed")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"the keys of table '{table}' hold a negative id "
                         f"({array.min()}); feature ids are uint64")
    if array.dtype.kind not in "ui" or array.dtype == np.dtype(bool):
        raise ValueError(f"the keys of table '{table}' have dtype "
                         f"{array.dtype}; uint64 feature ids are needed")
    return np.ascontiguousarray(array, dtype=_WIRE_KEY)


def checked_rows(rows, num_keys, dim, table):
    """`rows` as a C-contiguous (num_keys, dim) float32 array of finite
    values (the servers refuse NaN and infinities)."""
    dtype = getattr(rows, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        raise ValueError(f"the rows of table '{table}' have dtype {dtype}; a "
                         "float array is needed")
    if tuple(np.shape(rows)) != (num_keys, dim):
        raise ValueError(f"the rows of table '{table}' have shape "
                         f"{tuple(np.shape(rows))}; {num_keys} keys of dim "
                         f"{dim} need ({num_keys}, {dim})")
    array = np.ascontiguousarray(rows, dtype=_WIRE_FLOAT)
    if not np.isfinite(array).all():
        raise ValueError(f"the rows of table '{table}' hold NaN or infinite "
                         "values")
    return array


def routes(keys, num_shards):
    """For each shard, the positions in `keys` of the keys it holds, in the
    caller's order."""
    shards = shard_of_ids(keys, num_shards)
    order = np.argsort(shards, kind="stable")
    ends = np.cumsum(np.bincount(shards, minlength=num_shards))
    return np.split(order, ends[:-1])
