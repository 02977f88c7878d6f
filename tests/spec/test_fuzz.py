"""No traceback, ever: whatever text or bytes a person commits as fleet.yaml or a roster,
load_repo returns located errors (STYLE.md item 8: a traceback means a bug).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.spec.load import load_repo
from reconciler.spec.models import KINDS
from reconciler.spec.repo import FleetRepo
from tests.spec.corpus import BASE_FLEET, BASE_ROSTER, FLEET, ROSTER
from tests.spec.support import build_repo, write_files

TARGETS = {FLEET: BASE_FLEET, ROSTER: BASE_ROSTER}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Characters that mean something to YAML, so random text reaches the parser's corners.
YAMLISH = st.text(
    alphabet=st.sampled_from(list(":-?[]{},#&*!|>'\"%@` \n\t\r.~0123456789abcdkmsw\\\x00\x85\u2028\ufeff")),
    max_size=120,
)
ALL_KEYS = sorted(
    {name for model in KINDS.values() for name in model.model_fields}
    | {"agents", "runtimes", "ladder", "command", "accounts", "missions", "tasks"}
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "fleet.mosaicstack.dev/v1",
            "Fleet",
            "Roster",
            "demo",
            "stub",
            "stub-large",
            "orchestrator",
            "enhancer",
            "core",
            "90s",
            "{model}",
            "2026-11-30T00:00:00Z",
        ]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(ALL_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A mapping with a real header and keys of the real kinds, dumped as YAML: it reaches validation."""
    body = draw(st.dictionaries(st.sampled_from(ALL_KEYS), TREES, max_size=6))
    head = {"apiVersion": "fleet.mosaicstack.dev/v1", "kind": draw(st.sampled_from(["Fleet", "Roster"]))}
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump({**head, **body}, out)
    return out.getvalue()


@st.composite
def mutations(draw: st.DrawFn, text: str) -> str:
    """A valid document with a few characters replaced by YAML-ish ones."""
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 8)))
        text = text[:start] + draw(YAMLISH.filter(lambda s: len(s) <= 8)) + text[end:]
    return text


def assert_well_formed(repo: FleetRepo, root: Path) -> None:
    for err in repo.errors:
        assert err.line >= 1 and err.col >= 1, str(err)
        assert err.message.strip(), str(err)
        assert Path(err.path).is_relative_to(root), str(err)
    assert set(repo.tenants).isdisjoint(repo.invalid_tenants)
    assert {e.tenant for e in repo.errors if e.tenant} <= repo.invalid_tenants
    assert repo.ok == (not repo.errors)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository per module; each example rewrites the file under test completely."""
    return build_repo(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_any_text_gives_located_errors(fuzz_root: Path, target: str, data: st.DataObject) -> None:
    text = data.draw(st.one_of(YAMLISH, documents(), mutations(TARGETS[target])), label="text")
    write_files(fuzz_root, {**TARGETS, target: text})
    assert_well_formed(load_repo(fuzz_root), fuzz_root)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_any_bytes_give_located_errors(fuzz_root: Path, target: str, data: st.DataObject) -> None:
    valid = TARGETS[target].encode()
    raw = data.draw(
        st.one_of(
            st.binary(max_size=200),
            st.tuples(st.integers(0, len(valid)), st.binary(min_size=1, max_size=4)).map(
                lambda cut: valid[: cut[0]] + cut[1] + valid[cut[0] :]
            ),
        ),
        label="bytes",
    )
    write_files(fuzz_root, {**TARGETS, target: raw})
    assert_well_formed(load_repo(fuzz_root), fuzz_root)
