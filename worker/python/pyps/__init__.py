"""pyps: a Python worker of the parameter server (proto/ps/v1/).

    with pyps.Client("127.0.0.1:50051", worker_id=0) as client:
        client.init({"w": w0, "b": b0}, exempt_from_regularization={"b"})
        theta = client.pull()
        for batch in batches:
            theta = client.push_pull(gradients(theta, batch), len(batch))

Sparse tables (rows keyed by uint64 feature ids, on shard
SplitMix64(id) mod S):

    client.init({}, tables=[pyps.Table("emb", dim=8, optimizer="adagrad")])
    rows = client.pull_sparse("emb", ids)          # (len(ids), 8)
    client.push_sparse("emb", ids, row_grads, batch_size=len(batch))
"""

from pyps.client import Client, InitInfo, PushCounts
from pyps.errors import Error, ModelMismatch, Rejected, ServerUnavailable
from pyps.sparse import Table

__all__ = ["Client", "InitInfo", "PushCounts", "Table", "Error",
           "ModelMismatch", "Rejected", "ServerUnavailable"]
