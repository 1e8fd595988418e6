"""The boundary between your datasets and the steps: what they may yield, converted once.

Every dataset that training, evaluation or the `check` command reads first goes through its
task's `prepare_dataset`, which compares the dataset's element spec with the steps' input
signature. What can mean one thing only (float64 features, int64 class ids, ...) is
converted there, once, by a `dataset.map` in the pipeline: the steps always receive the dtypes
and shapes their input signature declares, so nothing retraces and the step itself does no
extra work. Everything else is one `DatasetError` that lists each problem with its fix.

Template-owned: `copier update` merges template changes into it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

Conversion = Callable[[tf.Tensor], tf.Tensor]
# One weight per example: it multiplies that example's loss (not its count in the accuracy).
WEIGHTS_SPEC = tf.TensorSpec(shape=(None,), dtype=tf.float32, name="sample_weights")


class DatasetError(ValueError):
    """A dataset does not fit the steps' input signature: one line per problem, with its fix.

    The message is one line for one problem, else a line that counts them and one per problem.

    Attributes:
        problems: Each problem, one line each: what was found, what is expected, the fix.
    """

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            super().__init__(f"{name} does not fit this project: {self.problems[0]}")
            return
        count = len(self.problems)
        lines = "".join(f"\n  - {problem}" for problem in self.problems)
        super().__init__(f"{name} does not fit this project ({count} problems):{lines}")


def read_failure(error: tf.errors.OpError) -> str | None:
    """Why a step failed on its batch, in one line, or `None` when the batch is not the cause.

    Two failures are the data's: a value check of the steps (the `tf.debugging` asserts on
    labels or token ids), whose message says what the values must be; and an exception
    raised by the dataset's own Python code (`from_generator`, `py_function`), named by its
    type and message. TensorFlow reports both inside a dump of the graph, where it escapes
    the apostrophes of an assert's message; they come back as written.
    """
    text = error.message
    check = re.search(r"assertion failed: \[(.*?)\] \[", text, re.DOTALL)
    if check is not None:
        return check.group(1).strip().rstrip(".").replace("\\'", "'")
    if "PyFunc" not in text:
        return None
    raised = re.findall(
        r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Iteration)(?:: .*)?)$",
        text,
        re.MULTILINE,
    )
    return f"its Python code raised {raised[-1]}" if raised else None


@dataclasses.dataclass(frozen=True)
class SpecCheck:
    """How one part of a dataset's elements (the features, the labels) fits its spec.

    Attributes:
        convert: Turns a batch into what the steps take, `tf.function`-compatible; `None`
            when the batch fits as it is, or cannot fit.
        note: The conversion in words, e.g. `features: float64 cast to float32`.
        problem: What was found, what is expected and the fix, one line per problem (dict
            features can have several); empty when it fits.
    """

    convert: Conversion | None = None
    note: str = ""
    problem: str = ""


def fits(spec: object, expected: tf.TensorSpec) -> bool:
    """Whether `spec` is a dense tensor of `expected`'s dtype and a compatible shape."""
    return (
        isinstance(spec, tf.TensorSpec)
        and spec.dtype == expected.dtype
        and expected.shape.is_compatible_with(spec.shape)
    )


def describe(spec: object) -> str:
    """A spec in words, e.g. `float32 batches of shape (batch, 64)`."""
    if isinstance(spec, tf.RaggedTensorSpec):
        return f"ragged {spec.dtype.name} batches"
    if isinstance(spec, dict):
        return f"dicts of {', '.join(map(repr, spec))}"
    if not isinstance(spec, tf.TensorSpec):
        return f"{type(spec).__name__} elements ({spec!r})"
    if spec.shape.rank is None:
        return f"{spec.dtype.name} batches of unknown rank"
    dims = [
        "batch" if i == 0 else "length" if d is None else str(d) for i, d in enumerate(spec.shape)
    ]
    return f"{spec.dtype.name} batches of shape ({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def cast_to(dtype: tf.DType) -> Conversion:
    """A conversion to `dtype`; integers saturate rather than wrap around.

    A too large id then stays too large, so the step's value check reports it instead of
    training on the id it would have wrapped to.
    """

    def convert(x: tf.Tensor) -> tf.Tensor:
        if x.dtype.is_integer and dtype.is_integer:
            return tf.dtypes.saturate_cast(x, dtype)
        return tf.cast(x, dtype)

    return convert


def _as_it_is(part: object) -> object:
    """A part of an element that fits: a tensor, or a dict of them (`tf.identity` takes one)."""
    return part


def conform(dataset: tf.data.Dataset, name: str, checks: Sequence[SpecCheck]) -> tf.data.Dataset:
    """`dataset` converted by `checks`, one per part of its elements, or every problem at once.

    Args:
        dataset: The batches, as the user's pipeline yields them.
        name: What the dataset is called in the error, e.g. `train_ds`.
        checks: One `SpecCheck` per part of an element, in order; one for a plain tensor.

    The conversions run in a `map` followed by `prefetch(2)`, so that they overlap the steps.
    They still cost a little where the step is tiny: on the digits MLP at batch 32 (about 3300
    steps per second on 2 CPUs), float64 features and int64 labels trained at 0.87x the steps
    per second of float32 and int32 arrays, and the small CNN at 0.96x
    (`benchmarks/data_boundary.md` of scaffold; a parallel `map` did no better). Arrays cast
    once with `astype` cost nothing.

    Returns:
        `dataset` itself when every part fits, else `dataset.map` of the conversions, which
        keeps its cardinality and its order.

    Raises:
        DatasetError: Listing every problem of every part, each with its fix.
    """
    problems = [line for check in checks for line in check.problem.splitlines()]
    if problems:
        raise DatasetError(name, problems)
    if all(check.convert is None for check in checks):
        return dataset
    converts = [check.convert or _as_it_is for check in checks]
    if len(converts) == 1:
        return dataset.map(converts[0]).prefetch(2)
    return dataset.map(
        lambda *parts: tuple(f(part) for f, part in zip(converts, parts, strict=True))
    ).prefetch(2)


def check_sample_weights(spec: object, name: str = "sample weights") -> SpecCheck:
    """How sample weights of `spec` fit `WEIGHTS_SPEC`: as they are, converted, or not.

    Weights of any integer, float or bool dtype are cast to float32, and a `(batch, 1)` column
    of them is flattened to `(batch,)`, as `model.fit` squeezes it; any value is kept as it is,
    as `model.fit` keeps it (a NaN weight makes a NaN loss, whose step is skipped).

    Args:
        spec: The weights' `tf.TypeSpec`, e.g. `dataset.element_spec[2]`.
        name: What the weights are called in the message, e.g. `train_ds sample weights`.

    Returns:
        The conversion to apply in the pipeline, if any, or the problem and its fix.
    """
    if fits(spec, WEIGHTS_SPEC):
        return SpecCheck()
    numeric = isinstance(spec, tf.TensorSpec) and (
        spec.dtype.is_integer or spec.dtype.is_floating or spec.dtype == tf.bool
    )
    if numeric and spec.shape.rank in (1, 2) and spec.shape[1:] in ((), (1,)):
        cast = cast_to(tf.float32)
        if spec.shape.rank == 1:
            return SpecCheck(convert=cast, note=f"{name}: {describe(spec)} cast to float32")
        return SpecCheck(
            convert=lambda w: cast(w[:, 0]),
            note=f"{name}: {describe(spec)} cast to float32, shape (batch,)",
        )
    if isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string:
        fix = "convert them with tf.strings.to_number(w) in data.py"
    elif numeric and spec.shape.rank is not None:
        fix = "give one weight per example, one number per row of the labels"
    else:
        fix = "make the dataset yield (features, labels, sample_weights) of dense tensors"
    return SpecCheck(
        problem=(
            f"{name} are {describe(spec)}, but the steps take one float32 weight per example, "
            f"shape (batch,); {fix}"
        )
    )


def class_weight_table(class_weight: Mapping[int, float], num_classes: int) -> tf.Tensor:
    """The weight of each class id in `[0, num_classes)`, 1.0 for those `class_weight` omits.

    As `model.fit(class_weight=...)` reads the mapping.

    Raises:
        ValueError: If a key is not a class id in `[0, num_classes)` or a weight is negative
            or not finite, naming each.
    """
    table = np.ones(num_classes, dtype=np.float32)
    bad = []
    for key, weight in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
            bad.append(f"key {key!r} is not a class id")
        elif not 0 <= key < num_classes:
            bad.append(f"class {key} is not in [0, {num_classes})")
        elif not (isinstance(weight, (int, float, np.number)) and 0 <= weight < np.inf):
            bad.append(f"class {key} has weight {weight!r}")
        else:
            table[int(key)] = weight
    if bad:
        raise ValueError(
            f"class_weight maps class ids in [0, {num_classes}) to finite weights >= 0, but "
            + "; ".join(bad)
        )
    return tf.constant(table)
