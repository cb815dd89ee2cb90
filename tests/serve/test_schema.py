"""Schemathesis against the app's own OpenAPI schema: generated requests (valid and not) never get a 5xx, and every
response matches the schema (schemathesis' default checks)."""

from __future__ import annotations

import shutil

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

import lmrec
from helpers import single_thread  # noqa: F401
from lmrec.serve import create_app

EXAMPLES = 15  # per operation and generation mode (positive and negative)


def test_api_never_fails_and_matches_its_schema(served_runs, tmp_path):
    runs = {name: lmrec.Run.load(shutil.copytree(served_runs[name], tmp_path / name),
                                 data=served_runs["data"] if name != "fism" else None)
            for name in ("alpharec", "pop", "fism")}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(runs))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    cases = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case) -> None:
                cases.append(case.call_and_validate().status_code)

            try:
                check()
            except Unsatisfiable:  # nothing can be wrong in a request without parameters (GET /health)
                assert mode is GenerationMode.NEGATIVE
    statuses = sorted(set(cases))
    assert cases and max(cases) < 500 and {200, 404, 422} <= set(statuses)
    print(f"schemathesis: {len(cases)} requests over {len(operations)} operations, statuses {statuses}")
