"""One status -> Anthropic `error.type` table, used by every translator and by the fakes."""

from __future__ import annotations

import json

import pytest

from sidecar import errors
from sidecar.protocol import bedrock_converse, gemini_response
from sidecar.protocol.openai import response as openai_response
from sidecar.providers import vertex
from sidecar.testing import anthropic_sse

# https://docs.anthropic.com/en/api/errors, "HTTP errors", as written there.
DOCUMENTED = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@pytest.mark.parametrize(("status", "etype"), DOCUMENTED.items())
def test_every_documented_status_maps_as_the_anthropic_docs_say(status: int, etype: str) -> None:
    assert errors.error_type_for(status) == etype


@pytest.mark.parametrize(("status", "etype"), [(409, "invalid_request_error"), (418, "invalid_request_error"), (422, "invalid_request_error"),
                                               (502, "api_error"), (503, "overloaded_error"), (599, "api_error")])  # fmt: skip
def test_a_status_the_docs_do_not_list_is_a_client_error_below_500_and_an_api_error_above(status: int, etype: str) -> None:
    # "We may also use this error type for other 4XX status codes"; an upstream's 503 is the API's overloaded.
    assert errors.error_type_for(status) == etype


@pytest.mark.parametrize("status", [*DOCUMENTED, 409, 422, 502, 503])
def test_every_translator_and_the_fake_api_use_the_one_table(status: int) -> None:
    want = errors.error_type_for(status)
    plain = b"upstream said no"
    assert openai_response.translate_error(status, plain)[1] == want
    assert gemini_response.map_error(status, plain)[1] == want
    assert json.loads(vertex.map_error(status, plain)[1])["error"]["type"] == want
    if status < 500:  # a Bedrock 5xx is 529 overloaded for a 503, else 500 api_error
        assert bedrock_converse.map_error(status, None, plain)[1] == want


def test_the_fake_api_sends_each_documented_type_with_its_documented_status() -> None:
    assert {etype: anthropic_sse.ERROR_TYPE_STATUSES[etype] for etype in DOCUMENTED.values()} == {v: k for k, v in DOCUMENTED.items()}


GOOGLE = ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND",
          "ABORTED", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED", "CANCELLED", "INTERNAL", "UNKNOWN", "UNAVAILABLE", "DEADLINE_EXCEEDED"]  # fmt: skip


@pytest.mark.parametrize("name", GOOGLE)
def test_gemini_and_vertex_read_a_google_status_the_same_way(name: str) -> None:
    body = json.dumps({"error": {"code": 599, "status": name, "message": "m"}}).encode()
    g_status, g_type, _ = gemini_response.map_error(599, body)  # an odd HTTP status: the name decides
    v_status, v_raw = vertex.map_error(599, body)
    assert json.loads(v_raw)["error"]["type"] == g_type
    assert v_status == (529 if g_status == 503 else g_status)  # Vertex speaks for Anthropic: 529, not 503
