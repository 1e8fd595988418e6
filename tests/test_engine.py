"""The engine subpackage: no Jinja, relative imports only, never the project's own modules.

Every project gets `src/PKG/engine/` copied from the template as it is (Copier renders only
`.jinja` files), so its bytes are the same whatever the answers; `test_render.py` checks each
render against these files.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from test_render import ENGINE_MODULES, TEMPLATE_ENGINE

ROOT = Path(__file__).resolve().parent.parent
# The modules a project owns or renders for its answers, which the engine is handed, never imports.
PROJECT_MODULES = {"config", "data", "model", "task", "gan"}


def test_the_engine_is_a_plain_copy_with_no_jinja() -> None:
    ignored = {"__pycache__", ".ruff_cache"}  # Caches, which Copier leaves out too.
    files = sorted(path for path in TEMPLATE_ENGINE.iterdir() if path.name not in ignored)
    assert {path.name for path in files} == {f"{module}.py" for module in ENGINE_MODULES}
    for path in files:
        assert path.suffix == ".py", f"{path.name}: Copier would render it per answer"
        text = path.read_text()
        assert not re.search(r"\{\{|\{%|%\}|\}\}", text), f"{path.name} holds Jinja"


def test_the_engine_imports_only_itself_by_relative_imports() -> None:
    for path in sorted(TEMPLATE_ENGINE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name}:{node.lineno} imports from outside engine/"
                module = (node.module or "").split(".")[0]
                names = {alias.name for alias in node.names} if not module else {module}
                assert names <= set(ENGINE_MODULES) | {"PACKAGE"}, (
                    f"{path.name}:{node.lineno} imports {names - set(ENGINE_MODULES)}"
                )
            elif isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                top = (module or "").split(".")[0]
                assert top not in PROJECT_MODULES, f"{path.name}:{node.lineno} imports {module}"


def test_every_example_has_the_same_engine() -> None:
    examples = sorted(path for path in (ROOT / "examples").iterdir() if path.is_dir())
    assert examples
    for example in examples:
        (engine,) = (example / "src").glob("*/engine")
        for module in ENGINE_MODULES:
            copy = engine / f"{module}.py"
            assert copy.read_bytes() == (TEMPLATE_ENGINE / f"{module}.py").read_bytes(), copy


@pytest.fixture(scope="module")
def labels_module() -> ModuleType:
    """The template's `engine/labels.py`, imported as the engine package of no project."""
    spec = importlib.util.spec_from_file_location(
        "scaffold_test_engine",
        TEMPLATE_ENGINE / "__init__.py",
        submodule_search_locations=[str(TEMPLATE_ENGINE)],
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{spec.name}.labels")


@pytest.mark.parametrize("from_logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("encoding", ["sparse", "one-hot", "binary"])
def test_the_label_encodings_agree_with_keras(
    labels_module: ModuleType, encoding: str, from_logits: bool
) -> None:
    """Each encoding's loss, accuracy, encoding and class ids, against Keras's own functions.

    The binary logits sit on both sides of 0 and of 0.5, so a threshold of 0.5 on logits (which
    is a probability of 0.62) predicts other classes than Keras's `BinaryAccuracy` on them.
    """
    import keras
    import numpy as np

    num_classes = 2 if encoding == "binary" else 3
    ids = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    if encoding == "binary":
        labels = labels_module.BinaryLabels(from_logits=from_logits)
        logits = np.array([[-1.0], [0.25], [0.4], [0.3], [2.0], [-0.2], [0.1], [-3.0]], "float32")
        probabilities = 1 / (1 + np.exp(-logits))
        predicted = (probabilities[:, 0] > 0.5).astype(np.int32)
        y = ids.astype("float32").reshape(-1, 1)
        keras_loss = keras.losses.binary_crossentropy
        keras_accuracy = keras.metrics.BinaryAccuracy()
    else:
        labels = (
            labels_module.SparseLabels(num_classes, from_logits=from_logits)
            if encoding == "sparse"
            else labels_module.OneHotLabels(num_classes, from_logits=from_logits)
        )
        logits = np.random.default_rng(0).normal(size=(len(ids), num_classes)).astype("float32")
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        predicted = probabilities.argmax(axis=-1)
        y = ids if encoding == "sparse" else np.eye(num_classes, dtype="float32")[ids]
        if encoding == "sparse":
            keras_loss = keras.losses.sparse_categorical_crossentropy
            keras_accuracy = keras.metrics.SparseCategoricalAccuracy()
        else:
            keras_loss = keras.losses.categorical_crossentropy
            keras_accuracy = keras.metrics.CategoricalAccuracy()
    outputs = logits if from_logits else probabilities

    assert labels.encoding == encoding
    assert labels.class_count == num_classes
    encoded = labels.encode(ids)
    np.testing.assert_array_equal(encoded, y)
    assert encoded.dtype == labels.spec.dtype.as_numpy_dtype
    np.testing.assert_array_equal(labels.label_class_ids(encoded), ids)
    np.testing.assert_array_equal(labels.class_ids(outputs), predicted)
    np.testing.assert_allclose(labels.probabilities(outputs), probabilities, rtol=1e-5)

    expected_loss = np.mean(keras_loss(y, outputs, from_logits=from_logits))
    assert float(labels.make_loss()(encoded, outputs)) == pytest.approx(expected_loss, rel=1e-5)
    summed = float(labels.make_loss("sum")(encoded, outputs))
    assert summed == pytest.approx(expected_loss * len(ids), rel=1e-5)
    accuracy = labels.make_accuracy("acc")
    accuracy.update_state(encoded, outputs)
    keras_accuracy.update_state(y, probabilities)  # Keras's metrics on probabilities, always.
    assert float(accuracy.result()) == pytest.approx(float(keras_accuracy.result()))
    assert float(accuracy.result()) == pytest.approx(np.mean(predicted == ids))
    layer = labels.output_layer()
    assert layer.units == labels.output_units == (1 if encoding == "binary" else num_classes)
    assert layer.name == ("logits" if from_logits else "probabilities")
