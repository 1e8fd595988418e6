"""The golden examples under examples/ are exactly what the template renders today."""

from __future__ import annotations

from scaffold.examples import EXAMPLES, check_examples, examples_dir


def test_examples_match_template() -> None:
    missing = [name for name in EXAMPLES if not (examples_dir() / name).is_dir()]
    assert not missing, f"examples/{missing[0]} is missing; run 'scaffold examples'"
    diff = check_examples()
    assert not diff, f"examples/ drifted from the template; run 'scaffold examples'\n{diff}"
