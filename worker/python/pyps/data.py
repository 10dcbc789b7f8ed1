"""Data helpers that match ps_worker's, so C++ and Python workers of one
job train on disjoint parts of the same data, in the same order: the split
(worker/trainer.cc), the per-epoch shuffle, the IDX reader's scaling
(common/dataset.cc) and the portable random numbers (worker/model.cc)."""

import gzip
import os

import numpy as np

from pyps.key_range import balanced_part

# Where Debian's dataset-fashion-mnist installs the gzip IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_U64 = np.uint64


def shard(n, rank, num_workers):
    """The examples of worker `rank` of `num_workers` among `n`: a range,
    the same one ps_worker trains on."""
    if num_workers <= 0 or not 0 <= rank < num_workers:
        raise ValueError(
            f"rank {rank} must be in [0, num_workers={num_workers})")
    return range(*balanced_part(n, num_workers, rank))


class Mt19937_64:
    """std::mt19937_64, whose output sequence the C++ standard fixes, so
    C++ and Python draw the same numbers from the same seed."""
    _N, _M = 312, 156
    _MATRIX_A = _U64(0xB5026F5AA96619E9)
    _UPPER, _LOWER = _U64(0xFFFFFFFF80000000), _U64(0x7FFFFFFF)

    def __init__(self, seed):
        state = [seed & 0xFFFFFFFFFFFFFFFF]
        for i in range(1, self._N):
            previous = state[-1]
            state.append((6364136223846793005 * (previous ^ (previous >> 62))
                          + i) & 0xFFFFFFFFFFFFFFFF)
        self._state = np.array(state, dtype=_U64)
        self._next = self._N

    def _twist(self):
        mt, n, m = self._state, self._N, self._M

        def mixed(i, following, shifted):
            y = (mt[i] & self._UPPER) | (following & self._LOWER)
            return shifted ^ (y >> _U64(1)) ^ np.where(
                (y & _U64(1)) == 1, self._MATRIX_A, _U64(0))
        # Entry i needs i+1 and i+m (mod n): the first n-m entries read old
        # values only, the next ones read entries this twist already made.
        low = np.arange(0, n - m)
        mt[low] = mixed(low, mt[low + 1], mt[low + m])
        high = np.arange(n - m, n - 1)
        mt[high] = mixed(high, mt[high + 1], mt[high + m - n])
        mt[n - 1] = mixed(n - 1, mt[0], mt[m - 1])
        self._next = 0

    def draw(self, count):
        """The next `count` outputs as uint64."""
        out = np.empty(count, dtype=_U64)
        done = 0
        while done < count:
            if self._next == self._N:
                self._twist()
            take = min(count - done, self._N - self._next)
            y = self._state[self._next:self._next + take].copy()
            y ^= (y >> _U64(29)) & _U64(0x5555555555555555)
            y ^= (y << _U64(17)) & _U64(0x71D67FFFEDA60000)
            y ^= (y << _U64(37)) & _U64(0xFFF7EEE000000000)
            y ^= y >> _U64(43)
            out[done:done + take] = y
            done += take
            self._next += take
        return out

    def uniform(self, limit, count):
        """worker/model.cc's PortableUniform::Fill: float32 in
        [-limit, limit) from the top 24 bits."""
        centred = (self.draw(count) >> _U64(40)).astype(np.int32) - (1 << 23)
        return (centred.astype(np.float32) * np.float32(2.0 ** -23)
                * np.float32(limit))


def mix_seed(seed, rank, epoch):
    """worker/trainer.cc's MixSeed: a stream per (seed, rank, epoch)."""
    mask = 0xFFFFFFFFFFFFFFFF
    x = ((seed * 0x9E3779B97F4A7C15) & mask) ^ (
        ((rank + 1) * 0xBF58476D1CE4E5B9) & mask) ^ (
        ((epoch + 1) * 0x94D049BB133111EB) & mask)
    return x ^ (x >> 31)


def epoch_order(examples, seed, rank, epoch):
    """The order worker `rank` visits its `examples` (a range) in `epoch`:
    ps_worker's Fisher-Yates shuffle, draw for draw."""
    items = np.arange(examples.start, examples.stop, dtype=np.int64)
    n = len(items)
    if n < 2:
        return items
    draws = Mt19937_64(mix_seed(seed, rank, epoch)).draw(n - 1)
    # Draw k picks j = draw % i for i = n, n-1, ..., 2.
    picks = (draws % np.arange(n, 1, -1, dtype=_U64)).tolist()
    order = items.tolist()
    for k, j in enumerate(picks):
        i = n - k - 1
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


def _read_idx(path, magic):
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as f:
        content = f.read()
    if len(content) < 8 or int.from_bytes(content[:4], "big") != magic:
        raise ValueError(f"'{path}' is not an IDX file of magic "
                         f"0x{magic:08x}")
    dims = content[3]
    shape = [int.from_bytes(content[4 + 4 * d:8 + 4 * d], "big")
             for d in range(dims)]
    data = np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"'{path}' holds {data.size} bytes for shape "
                         f"{shape}")
    return data.reshape(shape)


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def load_idx(images_path, labels_path):
    """(x, y): images as float32 rows scaled like ps_worker's reader
    (pixel / 255, bit for bit), labels as int64."""
    images = _read_idx(images_path, 0x00000803)
    labels = _read_idx(labels_path, 0x00000801)
    if len(images) != len(labels):
        raise ValueError(f"'{images_path}' holds {len(images)} images but "
                         f"'{labels_path}' {len(labels)} labels")
    scale = np.arange(256, dtype=np.float32) / np.float32(255)
    return scale[images.reshape(len(images), -1)], labels.astype(np.int64)


def load_fashion_mnist(data_dir=FASHION_MNIST_DIR):
    """((x_train, y_train), (x_test, y_test)) from the gzip IDX files."""
    def part(prefix):
        return load_idx(
            os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
            os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return part("train"), part("t10k")


def load_npz(path):
    """(x, y) from a NumPy .npz holding arrays `x` (one row per example)
    and `y` (integer labels)."""
    with np.load(path) as f:
        missing = {"x", "y"} - set(f.files)
        if missing:
            raise ValueError(f"'{path}' lacks the arrays {sorted(missing)} "
                             f"(it has {f.files})")
        x, y = f["x"], f["y"]
    if len(x) != len(y):
        raise ValueError(f"'{path}': {len(x)} rows of x but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"'{path}': y must hold integer labels, not "
                         f"{y.dtype}")
    return x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)
