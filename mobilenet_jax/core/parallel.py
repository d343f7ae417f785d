"""Devices and hosts: distributed start-up, the data-parallel mesh, global batches.

One path for any number of devices and hosts: a 1-D `jax.sharding.Mesh` of all devices (axis
'data'); a global batch is sharded along it and the TrainState is replicated, so XLA inserts
the collectives (BatchNorm statistics and gradients are reduced over the global batch).
"""
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed(requested: bool) -> None:
    """Join a multi-process run when asked, or when a cluster launcher says so (once per
    process: a second run in the same process stays in the run it joined)."""
    if jax.distributed.is_initialized():
        return
    cluster = (int(os.environ.get("SLURM_NTASKS", "1")) > 1
               or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
               or "JAX_COORDINATOR_ADDRESS" in os.environ)
    if not (requested or cluster):
        return
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:  # explicit set-up, e.g. two processes on a box
        kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                      num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    if jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def run_ahead(backend: str) -> dict:
    """How far the host runs ahead of the device: how many steps late the training loop
    reads a step's metrics (`lag`) and how many global batches a thread makes and places on
    the devices beforehand (`prefetch`). On a CPU the host and the device share the cores:
    running ahead only takes them from the step, and reading each step's metrics one step
    late with no prefetching was fastest (experiments/loop_overhead). An accelerator runs on
    its own."""
    return {"lag": 1, "prefetch": 0} if backend == "cpu" else {"lag": 8, "prefetch": 2}


class Devices:
    """The data-parallel mesh and how batches and state are placed on it."""

    def __init__(self, global_batch_size: int):
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharded = NamedSharding(self.mesh, P("data"))
        n = jax.device_count()
        if global_batch_size % n:
            fitting = n * max(1, global_batch_size // n)
            raise ValueError(f"batch_size {global_batch_size} must be a multiple of the number "
                             f"of devices ({n}); pass --batch-size {fitting}")
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        if global_batch_size % self.process_count:
            raise ValueError(f"batch_size {global_batch_size} must split evenly over "
                             f"{self.process_count} processes")

    def global_batch(self, local: dict) -> dict:
        """This process's numpy share of a batch -> one global array sharded over 'data'."""
        return {k: jax.make_array_from_process_local_data(self.batch_sharded, v)
                for k, v in local.items()}

    def abstract(self, tree):
        """Shapes and dtypes of `tree`, replicated over the mesh (what a restore fills in)."""
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=self.replicated), tree)
