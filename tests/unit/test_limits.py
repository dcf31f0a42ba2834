"""`json_problem`: non-finite numbers and lone surrogates, and nothing else, are refused."""

from __future__ import annotations

import pytest

from hybridrec.serving.limits import json_problem


@pytest.mark.parametrize(
    "body",
    [b'{"w": NaN}', b"[Infinity]", b'{"a": {"b": [1, -Infinity]}}'],
)
def test_non_finite_numbers(body: bytes) -> None:
    problem = json_problem(body)
    assert problem is not None and "finite" in problem


@pytest.mark.parametrize("body", [b'{"id": "\\ud800"}', b'{"\\uDFFF": 1}', b'["ok", "x\\udbffy"]'])
def test_lone_surrogates(body: bytes) -> None:
    problem = json_problem(body)
    assert problem is not None and "surrogate" in problem


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "NaN", "t": "Infinity and beyond"}',  # words in strings
        b'{"smile": "\\ud83d\\ude00"}',  # a surrogate pair is one character
        b'{"w": 1e308}',
        b"not json at all NaN",  # the route's parser reports this one
        b"",
    ],
)
def test_acceptable_or_not_ours(body: bytes) -> None:
    assert json_problem(body) is None
