"""pyps: a Python worker of the parameter server (proto/ps/v1/).

    with pyps.Client("127.0.0.1:50051", worker_id=0) as client:
        client.init({"w": w0, "b": b0}, exempt_from_regularization={"b"})
        theta = client.pull()
        for batch in batches:
            theta = client.push_pull(gradients(theta, batch), len(batch))
"""

from pyps.client import Client, InitInfo, PushCounts
from pyps.errors import Error, ModelMismatch, Rejected, ServerUnavailable

__all__ = ["Client", "InitInfo", "PushCounts", "Error", "ModelMismatch",
           "Rejected", "ServerUnavailable"]
