"""pyps.torch: a torch.nn.Module's parameters as the job's θ.

    worker = pyps.torch.Worker(model, client)
    worker.init()                      # declares the named parameters
    worker.pull()                      # θ into the parameters
    for x, y in batches:
        loss_fn(model(x), y).backward()
        worker.step(len(y))            # push .grad, load the new θ
"""

import ctypes

import torch


def set_num_threads(threads):
    """torch's intra-op threads and OpenBLAS's, which Debian's torch and
    numpy call through libblas.so.3 and which torch.set_num_threads does
    not reach: workers sharing a machine's cores must not each spin one
    BLAS thread per core."""
    torch.set_num_threads(threads)
    try:
        ctypes.CDLL("libblas.so.3").openblas_set_num_threads(threads)
    except (OSError, AttributeError):
        pass  # not OpenBLAS: Debian's reference BLAS has one thread


class Worker:
    """Binds a module's named parameters to a pyps.Client. Biases (names
    ending in "bias") are exempt from regularization unless
    `exempt_from_regularization` says otherwise. Parameters may live on a
    GPU: they travel through pinned host buffers."""

    def __init__(self, model, client, exempt_from_regularization=None):
        self.model = model
        self.client = client
        self.parameters = dict(model.named_parameters())
        if exempt_from_regularization is None:
            exempt_from_regularization = {
                name for name in self.parameters if name.endswith("bias")}
        self.exempt = set(exempt_from_regularization)
        for name, parameter in self.parameters.items():
            if parameter.dtype != torch.float32:
                raise ValueError(f"parameter '{name}' is {parameter.dtype}; "
                                 "the servers hold float32")
        # Host copies of GPU parameters and gradients, pinned so the copies
        # to and from the device are DMA transfers.
        self._host = {
            name: torch.empty(p.shape, dtype=torch.float32, pin_memory=True)
            for name, p in self.parameters.items() if p.device.type != "cpu"}

    def init(self):
        """Declares the parameters, with their current values, in the
        module's order; returns pyps.InitInfo."""
        return self.client.init(
            {name: self._host_values(name, p.detach())
             for name, p in self.parameters.items()},
            exempt_from_regularization=self.exempt)

    def pull(self, min_version=None):
        """Copies θ from the servers into the parameters."""
        self._load(self.client.pull(min_version))

    def step(self, batch_size, min_version=None, pull=True):
        """Pushes the parameters' .grad (the mean over `batch_size`
        examples), loads the answer's θ, and zeroes the gradients: one
        PushPull per shard. pull=False only pushes (a worker's last step:
        in sync mode no round follows it to wait for)."""
        grads = {}
        for name, p in self.parameters.items():
            if p.grad is None:
                raise ValueError(f"parameter '{name}' has no gradient: call "
                                 "backward() before step()")
            grads[name] = self._host_values(name, p.grad)
        if pull:
            self._load(self.client.push_pull(grads, batch_size, min_version))
        else:
            self.client.push(grads, batch_size)
        for p in self.parameters.values():
            p.grad = None

    def _host_values(self, name, tensor):
        """A numpy view of `tensor` (CPU), or of its pinned host copy."""
        if tensor.device.type == "cpu":
            return tensor.contiguous().numpy()
        host = self._host[name]
        host.copy_(tensor)
        return host.numpy()

    def _load(self, theta):
        with torch.no_grad():
            for name, p in self.parameters.items():
                values = torch.from_numpy(theta[name])
                if p.device.type != "cpu":
                    host = self._host[name]
                    host.copy_(values)
                    values = host
                p.copy_(values, non_blocking=p.device.type != "cpu")
        if any(p.device.type == "cuda" for p in self.parameters.values()):
            torch.cuda.synchronize()


__all__ = ["Worker", "set_num_threads"]
