"""Fuzzed space files and ``--params``: every mutation of a shipped space is a valid space or one SpaceError.

Property-based: hypothesis mutates the shipped space files at random (a key dropped, renamed or
duplicated, a value of the wrong type, a string where a number goes, a YAML tag) and the parser must
answer each with a Space or a :class:`search.space.SpaceError` that names the file and a key, never
with another exception. The same for the ``--params`` check. A handful of cases go through the command
lines too: exit code 2, one line, and an untouched store.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.space import SPACES_DIR, SpaceError, list_spaces, load_space, validate_params

SHIPPED = {name: yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text()) for name in list_spaces()}
CASES = 400  # per property; the parser answers in about a millisecond

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["12", "1e3", "nan", "-1", "0", "keep", "ori", "replace", "GhostModuleV3", "cpu"]),
    st.lists(st.one_of(st.integers(-2, 600), st.text(max_size=3)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
# text a YAML file may hold where a value goes: tags that build other types, or refuse to build at all
TAGGED = [
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2026-12-05",
    "!!omap [a: 1]",
    "!!str 12",
    "!!float '3'",
    "!!int '0x10'",
    "*undefined_alias",
    "&a [*a]",
]


def _nodes(node, prefix=()):
    """Every path into a nested mapping/list, the root first."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _nodes(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _nodes(v, (*prefix, i))


def _at(root, path):
    for key in path:
        root = root[key]
    return root


def _mutate(data: dict, path: tuple, kind: str, value, new_key: str) -> dict:
    data = json.loads(json.dumps(data))  # a deep copy (the shipped spaces are plain JSON-like data)
    parent, key = _at(data, path[:-1]), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind == "rename" and isinstance(parent, dict):
        parent[new_key] = parent.pop(key)
    else:
        parent[key] = value
    return data


def _check(path: Path, mutated_key) -> None:
    try:
        load_space(str(path))
    except SpaceError as exc:
        text = str(exc)
        assert text.startswith(str(path)), text
        assert "\n" not in text.strip(), text
        where = text[len(str(path)) :]
        assert where.startswith(": ") and len(where) > 2, text  # "FILE: key: problem" or "FILE: problem"
        # (any other exception fails the test: that is the property)


def _write(text: str) -> Path:
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=_TMP)
    f.write(text)
    f.close()
    return Path(f.name)


_TMP = tempfile.mkdtemp(prefix="space-fuzz-")


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutation_of_a_shipped_space_is_a_space_or_one_space_error(data):
    name = data.draw(st.sampled_from(sorted(SHIPPED)), label="space")
    paths = [p for p in _nodes(SHIPPED[name]) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    kind = data.draw(st.sampled_from(["drop", "rename", "replace", "replace"]), label="kind")
    value = data.draw(values, label="value")
    new_key = data.draw(st.one_of(st.text(max_size=6), st.sampled_from(["keep", "cpu", "layer", "op"])))
    mutated = _mutate(SHIPPED[name], path, kind, value, new_key)
    _check(_write(yaml.safe_dump(mutated, sort_keys=False, allow_unicode=True)), path[-1])


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_duplicated_lines_and_yaml_tags_in_a_space_file_are_one_space_error(data):
    name = data.draw(st.sampled_from(sorted(SHIPPED)), label="space")
    lines = (SPACES_DIR / f"{name}.yaml").read_text().splitlines()
    at = data.draw(st.integers(0, len(lines) - 1), label="line")
    if data.draw(st.booleans(), label="duplicate"):
        lines.insert(at, lines[at])  # a key twice in one mapping, or a list item twice
    else:
        line = lines[at]
        head, sep, _ = line.partition(": ")
        tag = data.draw(st.sampled_from(TAGGED), label="tag")
        lines[at] = f"{head}: {tag}" if sep else f"{line} {tag}"
    _check(_write("\n".join(lines) + "\n"), None)


@settings(max_examples=CASES, deadline=None)
@given(
    params=st.one_of(
        values,
        st.dictionaries(
            st.one_of(st.sampled_from(["stage3", "lateral", "pan_p5", "stage2"]), st.text(max_size=6)),
            values,
            max_size=4,
        ),
    )
)
def test_any_params_are_canonical_or_one_space_error(params):
    space = load_space("modes")
    try:
        out = validate_params(space, params)
    except SpaceError as exc:
        assert str(exc).startswith(space.path + ": params"), str(exc)
        return
    assert list(out) == [s.name for s in space.sites]


# ---------------------------------------------------------------------------------- through the CLIs
BAD_PARAMS = ['{"stage3": 1}', '{"stage9": "ori"}', "[1, 2]", '{"stage3": "ori"', '"ori"', '{"stage3": null}']


@pytest.mark.parametrize("params", BAD_PARAMS)
def test_bad_params_on_the_command_line_exit_2_in_one_line(params, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "search.trial", "--space", "modes", "--params", params, "--out", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "--params" in done.stderr or "params" in done.stderr
    assert not (tmp_path / "t").exists()


def test_mutated_space_files_through_search_run_exit_2_and_leave_the_store_untouched(tmp_path):
    data = SHIPPED["modes"]
    cases = [
        _mutate(data, ("budgets", "cpu", "epochs"), "replace", "12", ""),
        _mutate(data, ("sites", "stage3", "layer"), "replace", [5], ""),
        _mutate(data, ("objectives",), "drop", None, ""),
    ]
    texts = [yaml.safe_dump(c, sort_keys=False) for c in cases]
    texts.append(
        (SPACES_DIR / "modes.yaml").read_text().replace("name: modes", "name: !!python/name:os.system")
    )
    for i, text in enumerate(texts):
        space = tmp_path / f"bad{i}.yaml"
        space.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "search.run", "--space", str(space), "--storage-path", str(tmp_path / "ray"),
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 2, (text, done.stdout[-2000:], done.stderr[-2000:])
        assert len(done.stderr.strip().splitlines()) == 1 and str(space) in done.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("budgets", "screen", "fraction"), None, "budgets.screen.fraction"),  # found by the fuzz in CI
        (("budgets", "cpu", "width"), None, "budgets.cpu.width"),
        (("budgets", "cpu", "lr0"), float("nan"), "budgets.cpu.lr0"),
        (("budgets", "cpu", "fraction"), float("inf"), "budgets.cpu.fraction"),
        (("sites", "stage1", "choices", "ori", "block"), [], "sites.stage1.choices.ori.block"),
    ],
)
def test_the_mutations_the_fuzz_found_are_one_space_error_naming_the_key(path, value, key):
    mutated = _mutate(SHIPPED["placements"], path, "replace", value, "")
    with pytest.raises(SpaceError, match=re.escape(key)):
        load_space(str(_write(yaml.safe_dump(mutated, sort_keys=False))))
