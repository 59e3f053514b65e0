"""The anchor: the study's BN MLP trained data-parallel in plain JAX, by hand.

Holds `Anchor`, the reference that kbn's multi-process path is measured
against (`recipes/distributed.py --anchor`): the same network (784-100-100-
100-10, batch norm over the *global* batch, SGD, the same initial kernels),
its parameters replicated, every global batch split across the devices of a
one-axis mesh, a block of batches per compiled call (`jax.lax.scan`), and
the fewest collectives a hand-written step needs: under `jax.shard_map`,
one `psum` of each batch norm's sum and sum of squares in the forward pass
(its transpose is the one of the backward pass) and one `psum` of all the
gradients, flattened into one buffer. Nothing of Keras or kbn is in the
step. It must not time, parse or print anything (`comparison` does). JAX is
imported inside the functions.
"""

import numpy as np

EPSILON = 1e-3
MOMENTUM = 0.99


class Anchor:
    """A plain-JAX data-parallel trainer of the study's MLP.

    Args:
        kernels: The MLP's initial kernels (`networks.initial_weights`).
        images: The training images, `(examples, 784)`, on every process.
        learning_rate: SGD's rate.
        devices: The devices of the mesh (every process's), by default
            `jax.devices()`.

    Call `train(indices, labels)` with a global block of index batches,
    `(batches_per_step, batch)`, as `kbn.trainer.index_batches` yields
    (each process the same global block): it runs the block in one compiled
    call and returns the mean loss of its last batch.
    """

    def __init__(self, kernels, images, learning_rate, devices=None):
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec

        devices = jax.devices() if devices is None else devices
        self.mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.split = NamedSharding(self.mesh, PartitionSpec(None, "batch"))
        params = []
        for kernel in kernels[:-1]:
            features = kernel.shape[1]
            params.append(
                {
                    "kernel": kernel,
                    "gamma": np.ones(features, "float32"),
                    "beta": np.zeros(features, "float32"),
                }
            )
        output = {"kernel": kernels[-1], "bias": np.zeros(kernels[-1].shape[1])}
        state = {
            "params": params + [output],
            "moving": [
                {"mean": np.zeros(k.shape[1]), "variance": np.ones(k.shape[1])}
                for k in kernels[:-1]
            ],
        }
        self.state = jax.tree.map(
            lambda a: self._put(np.asarray(a, "float32"), self.replicated), state
        )
        self.images = self._put(np.asarray(images, "float32"), self.replicated)
        self.learning_rate = float(learning_rate)
        self._train = jax.jit(self._block_step(), donate_argnums=0)

    def _put(self, array, sharding):
        import jax

        return jax.make_array_from_callback(
            array.shape, sharding, lambda index: array[index]
        )

    def train(self, indices, labels):
        """Trains on one global block; returns the last batch's mean loss."""
        indices = self._put(np.asarray(indices, "int32"), self.split)
        labels = self._put(np.asarray(labels, "int32"), self.split)
        self.state, loss = self._train(self.state, self.images, indices, labels)
        return loss

    def lower(self, batches_per_step, batch_size):
        """The compiled block step (for counting its collectives)."""
        import jax

        block = jax.ShapeDtypeStruct(
            (batches_per_step, batch_size), "int32", sharding=self.split
        )
        return self._train.lower(self.state, self.images, block, block).compile()

    def _block_step(self):
        import jax
        import jax.flatten_util
        from jax.sharding import PartitionSpec

        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:  # JAX before 0.6
            from jax.experimental.shard_map import shard_map
        rate = self.learning_rate
        devices = self.mesh.size

        def local_block(state, images, indices, labels):
            batch = indices.shape[1] * devices  # the global batch

            def one_batch(state, block):
                index, label = block
                loss, (grads, moments) = _value_and_grad(
                    state["params"], images[index], label, batch
                )
                flat, unflatten = jax.flatten_util.ravel_pytree(grads)
                grads = unflatten(jax.lax.psum(flat, "batch"))
                params = jax.tree.map(lambda w, g: w - rate * g, state["params"], grads)
                moving = [
                    {
                        "mean": m["mean"] * MOMENTUM + mean * (1 - MOMENTUM),
                        "variance": m["variance"] * MOMENTUM
                        + variance * (1 - MOMENTUM),
                    }
                    for m, (mean, variance) in zip(state["moving"], moments)
                ]
                return {"params": params, "moving": moving}, loss

            state, losses = jax.lax.scan(one_batch, state, (indices, labels))
            return state, jax.lax.psum(losses[-1], "batch")

        whole, split = PartitionSpec(), PartitionSpec(None, "batch")
        return shard_map(
            local_block,
            mesh=self.mesh,
            in_specs=(whole, whole, split, split),
            out_specs=(whole, whole),
            **_unchecked(shard_map),
        )


def _unchecked(shard_map):
    """shard_map's keyword that turns off its replication checks: psum's
    transpose is then psum (each device's cotangent, summed), and the
    gradients of the replicated parameters stay per device until the one
    explicit psum."""
    import inspect

    names = inspect.signature(shard_map).parameters
    return {"check_vma": False} if "check_vma" in names else {"check_rep": False}


def _value_and_grad(params, images, labels, batch):
    """This device's part of the loss of the global batch, its gradients
    (this device's part) and the batch norms' global moments."""
    import jax

    def loss(params):
        h, moments = images, []
        for layer in params[:-1]:
            h = h @ layer["kernel"]
            # The global sum and sum of squares in one all-reduce.
            sums = jax.lax.psum(
                jax.numpy.concatenate([h.sum(0), (h * h).sum(0)]), "batch"
            )
            mean, square = jax.numpy.split(sums / batch, 2)
            variance = square - mean * mean
            moments.append((mean, variance))
            h = (h - mean) * jax.lax.rsqrt(variance + EPSILON) * layer["gamma"]
            h = jax.nn.relu(h + layer["beta"])
        logits = h @ params[-1]["kernel"] + params[-1]["bias"]
        log_p = jax.nn.log_softmax(logits)
        picked = jax.numpy.take_along_axis(log_p, labels[:, None], axis=1)
        moments = jax.lax.stop_gradient(moments)
        return -picked.sum() / batch, moments

    (value, moments), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, (grads, moments)
