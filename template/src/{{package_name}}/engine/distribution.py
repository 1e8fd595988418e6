"""Where a run executes: one device, every local device, or every worker's (`tf.distribute`).

`RunOptions.strategy` names the strategy (`make_strategy` builds it); `fit(..., strategy=...)`
takes any `tf.distribute.Strategy` instead. Under a strategy, `Config.batch_size` is the
global batch: every step reads one batch from the run's one iterator and gives each replica
its share of the rows (`split_batch`). Losses are sums over this replica's examples divided
by the examples of the whole batch (`global_batch_size`), so the replicas' gradients add up
to exactly the gradient of one device on the whole batch, whatever the number of replicas and
however unevenly a last batch splits. With several workers (`multi-worker`), every worker
reads the same global batch from its own identical iterator and takes the rows of its own
replicas, whose ids count across the whole cluster; the figures stay those of one device.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from . import interrupts
from .cluster import ClusterError, read_tf_config
from .options import STRATEGIES


class DistributionError(ValueError):
    """A strategy that cannot be built, or a model built outside its strategy."""


def use_cpu_devices(count: int) -> None:
    """Split the CPU into `count` logical devices, so that `mirrored` has replicas to use.

    To try a distributed run, and test one, on a machine without GPUs. TensorFlow fixes its
    devices when it first runs an op, so call this first (`python -m <package> train
    --cpu-devices N` does).

    Raises:
        DistributionError: If TensorFlow already started with another number of CPU devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        started = len(tf.config.list_logical_devices("CPU"))
        if started != count:
            raise DistributionError(
                f"TensorFlow already started with {started} CPU device(s), so it cannot be "
                f"split into {count}; call distribution.use_cpu_devices({count}) before "
                "TensorFlow runs any op"
            ) from None


def make_strategy(strategy: str, cpu_devices: int | None = None) -> tf.distribute.Strategy | None:
    """The strategy `RunOptions.strategy` names; `None` for `none`.

    Args:
        strategy: `none` (no strategy: one device), `mirrored` (a replica on every local
            GPU; without GPUs, on every logical CPU device, see `use_cpu_devices`) or
            `multi-worker` (`MultiWorkerMirroredStrategy` over the workers of `TF_CONFIG`,
            see `cluster.py`: a replica on every GPU of each, or on its CPU).
        cpu_devices: If set, split the CPU into this many logical devices first.

    Raises:
        DistributionError: If the strategy is unknown, or `TF_CONFIG` is missing or
            malformed for `multi-worker`.
    """
    if strategy not in STRATEGIES:
        raise DistributionError(
            f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    if cpu_devices is not None:
        use_cpu_devices(cpu_devices)
    if strategy == "none":
        return None
    if strategy == "multi-worker":
        try:
            read_tf_config()
        except ClusterError as error:
            raise DistributionError(str(error)) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    # Collective ops key their groups by size, and fail when strategies with different
    # numbers of replicas share a process (as the tests do); CPUs reduce on one device.
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the run's files: always, but for a worker other than the chief.

    Under `MultiWorkerMirroredStrategy`, only the chief (worker 0) writes checkpoints,
    `run.json`, `metrics.jsonl`, TensorBoard events and the model, and prints progress.
    """
    return strategy is None or bool(getattr(strategy.extended, "should_checkpoint", True))


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether `strategy` spans several processes, which must then stop at the same step."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class ClusterStop:
    """Stops every worker of a multi-worker run at the same step, after one checkpoint.

    A worker that stops alone would leave the others waiting for it in the next all-reduce,
    so under `MultiWorkerMirroredStrategy` a stop request (Ctrl-C or SIGTERM within
    `interrupts.catch_signals`, as the `train` command runs) goes through TensorFlow's
    `tf.distribute.experimental.PreemptionCheckpointHandler`: the worker that got the signal
    tells the others (within a second) at which call of steps to stop, and before it every
    worker saves the run's checkpoint with `save` and raises the error `stopped` gives.
    A restart with `--resume` goes on from that checkpoint. The handler saves nothing of its
    own: `save` writes the run's checkpoint, and the resume reads it.

    Args:
        strategy: The run's `MultiWorkerMirroredStrategy`.
        save: Writes the run's checkpoint at `(epoch, step)`; returns its path, or `None`.
        stopped: The error to raise once it is written, given `(epoch, step, path)`.
    """

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        save: Callable[[int, int], Path | None],
        stopped: Callable[[int, int, Path | None], Exception],
    ) -> None:
        self.epoch = self.step = 0
        self.saved: Path | None = None
        self._save, self._stopped = save, stopped
        # The handler needs a checkpoint manager to restore from: an empty one, of its own.
        self._scratch = tempfile.mkdtemp(prefix="preemption-")
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(), self._scratch, max_to_keep=1)
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: interrupts.requested() is not None,
            exit_fn=self._exit,
            save_fn=self._write,
        )
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager, termination_config=config
        )
        # The strategy's runtime took SIGTERM over in C when it started: take it back.
        interrupts.reclaim_signals()

    def check(self, epoch: int, step: int) -> None:
        """Call before every call of steps, with the position the run is at.

        Raises:
            Exception: The one `stopped` gives, after the checkpoint, when the cluster stops.
        """
        self.epoch, self.step = epoch, step
        # When it saves, the handler calls a deprecated property of its own, which warns.
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            self.handler.save_checkpoint_if_preempted()
        finally:
            logger.setLevel(level)

    def close(self) -> None:
        """Let go of the handler and its scratch directory."""
        del self.handler  # Its threads stop with it.
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _write(self) -> None:
        self.saved = self._save(self.epoch, self.step)

    def _exit(self) -> None:
        raise self._stopped(self.epoch, self.step, self.saved)


def check_model(model: keras.Model, strategy: tf.distribute.Strategy | None) -> None:
    """Fail fast when a built model's variables do not belong to `strategy`.

    Args:
        model: The model to train.
        strategy: The strategy to train with; `None` for no strategy (one device).

    Raises:
        DistributionError: Naming the fix: build the model inside `strategy.scope()`.
    """
    if not model.weights:
        return  # Built on its first call, which the trainer makes inside the scope.
    owner = getattr(model.weights[0].value, "_distribute_strategy", None)
    if owner is strategy:
        return
    if owner is None:
        raise DistributionError(
            f"the model was built outside the scope of {type(strategy).__name__}, so its "
            "variables live on one device; build it inside `with strategy.scope():`, or "
            "let fit() build it"
        )
    raise DistributionError(
        f"the model was built in the scope of {type(owner).__name__}"
        + ("" if strategy is None else f", not of the {type(strategy).__name__} it trains with")
        + "; build it inside the scope of the strategy you train with, or let fit() build it"
    )


def split_batch(
    strategy: tf.distribute.Strategy, batch: tuple[tf.Tensor, ...]
) -> tuple[tf.distribute.DistributedValues, ...]:
    """Give each replica its share of a global batch's rows.

    Replica `i` of `n` gets rows `[i * b // n, (i + 1) * b // n)` of a batch of `b`: shares
    differ by at most one row, and a batch smaller than `n` leaves some replicas none (their
    losses and metrics then count nothing).
    """
    size = tf.shape(batch[0])[0]

    def share(tensor: tf.Tensor) -> tf.distribute.DistributedValues:
        def rows(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
            index, count = context.replica_id_in_sync_group, context.num_replicas_in_sync
            return tensor[(index * size) // count : ((index + 1) * size) // count]

        return strategy.experimental_distribute_values_from_function(rows)

    return tuple(share(tensor) for tensor in batch)


def run_on_replicas(
    strategy: tf.distribute.Strategy, step: Callable[..., tf.Tensor | None]
) -> Callable[..., tf.Tensor | None]:
    """`step` of one global batch, run on every replica with its share of the rows.

    Returns the first local replica's result: the steps' `update_status` codes are the same
    on every replica.
    """

    def replica_step(*batch: tf.Tensor) -> tf.Tensor | None:
        # A plain function: `strategy.run` hands a `tf.function` the per-replica values whole.
        return step(*batch)

    def distributed_step(*batch: tf.Tensor) -> tf.Tensor | None:
        result = strategy.run(replica_step, args=split_batch(strategy, batch))
        if result is None:
            return None
        return strategy.experimental_local_results(result)[0]

    return distributed_step


def local_variables(
    strategy: tf.distribute.Strategy | None, variables: Sequence[keras.Variable]
) -> list[tf.Variable]:
    """`variables` as stored on each local replica, e.g. to restore a metric's on every one.

    A metric's variables sync on read: each replica keeps its own part, and reading one in
    the cross-replica context sums them. Its parts are its components, one per local replica;
    without a strategy, a variable is its own one part.
    """
    values = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    if strategy is None:
        return values
    return [part for value in values for part in strategy.experimental_local_results(value)]


@tf.autograph.experimental.do_not_convert
def global_batch_size(labels: tf.Tensor) -> tf.Tensor:
    """The number of examples in the whole batch, as float32, on every replica.

    `labels` are this replica's; outside `tf.distribute` (or with one replica) their number
    is the answer, and no op is added.
    """
    size = tf.cast(tf.shape(labels)[0], tf.float32)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return size
    return context.all_reduce("sum", size)


class BatchMean(keras.metrics.Mean):
    """The mean of a per-batch figure over an epoch, each batch weighted by its examples.

    As `model.fit` weights its epoch loss. Under `tf.distribute`, each replica adds its part
    of the batch's figure (the figures of `total_loss` are parts that add up across replicas)
    and its own number of examples, so the sum over replicas is exact.
    """

    @tf.autograph.experimental.do_not_convert
    def add(self, part: tf.Tensor, batch_size: tf.Tensor, examples: tf.Tensor) -> None:
        """Record this replica's `part` of a batch's figure. `tf.function`-compatible.

        Args:
            part: This replica's part of the figure; the parts add up to the batch's figure.
            batch_size: The examples in the whole batch.
            examples: The examples on this replica.
        """
        self.total.assign_add(tf.cast(part * batch_size, self.total.dtype))
        self.count.assign_add(tf.cast(examples, self.count.dtype))
