"""Fuzzing the HTTP layer: malformed requests get 4xx in the OpenAI error shape, never a 500."""

import json

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_support import FakeEngine
from vlmforge.serve.app import create_app
from vlmforge.serve.settings import ServeSettings

APP = create_app(FakeEngine(), ServeSettings(max_tokens_cap=64, max_request_bytes=50_000), ui=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def _no_server_error(ctx, response, case):
    assert response.status_code < 500, f"{response.status_code}: {response.content[:200]!r}"


def _openai_shaped_errors(ctx, response, case):
    if response.status_code >= 400:
        error = json.loads(response.content)["error"]
        assert set(error) == {"message", "type", "param", "code"}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_never_crash_the_server(case):
    case.call_and_validate(checks=[_no_server_error, _openai_shaped_errors])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = {
    "model": st.just("fake") | json_values,
    "messages": st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "tool", 3]), "content": json_values}),
        max_size=3,
    )
    | json_values,
    "temperature": json_values,
    "top_p": json_values,
    "max_tokens": json_values,
    "stop": json_values,
    "seed": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
    "stream": json_values,
    "n": json_values,
}
# Bodies close to valid: one or more fields broken, the rest plausible.
malformed = st.fixed_dictionaries({}, optional=FIELDS) | json_values | st.binary(max_size=64)


@pytest.fixture(scope="module")
def http():
    with TestClient(APP, raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=malformed)
def test_malformed_bodies_get_4xx(http, body):
    content = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    if response.status_code == 200:  # the fuzzer hit a valid request: fine, but it must be a real answer
        text = response.text
        assert "chat.completion" in text
        return
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_server_is_still_up_after_fuzzing(http):
    assert http.get("/health").json()["status"] == "ok"
    ok = http.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
