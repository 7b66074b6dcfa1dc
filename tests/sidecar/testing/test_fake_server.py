"""Every fake upstream is one FakeServer: the same start/stop, script queue, recording and
control endpoints, whichever API it imitates."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_bedrock import FakeBedrock
from sidecar.testing.fake_behaviours import RecordedRequest
from sidecar.testing.fake_echo import EchoUpstream
from sidecar.testing.fake_gemini import FakeGemini
from sidecar.testing.fake_openai import FakeOpenAI
from sidecar.testing.fake_server import FakeServer
from sidecar.testing.fake_vertex import FakeVertex

FAKES = [FakeAnthropic, FakeOpenAI, FakeGemini, FakeBedrock, FakeVertex, EchoUpstream]


@pytest.mark.parametrize("make", FAKES, ids=lambda f: f.__name__)
async def test_each_fake_records_what_it_got_and_answers_the_control_endpoints(make: type[FakeServer[object]]) -> None:
    async with make() as fake, aiohttp.ClientSession() as http:
        assert isinstance(fake, FakeServer)
        fake.script(fake.default, fake.default)
        assert fake.pending == 2 and fake.next_behaviour() is fake.default and fake.pending == 1
        fake.requests.append(RecordedRequest("POST", "/v1/x", "a=1", [("X-Probe", "yes")], b"{}", 0.0))
        async with http.get(fake.url + "/__fake/requests") as r:
            seen = await r.json()
        assert [(s["method"], s["path"], s["query_string"], s["headers"]) for s in seen] == [("POST", "/v1/x", "a=1", [["X-Probe", "yes"]])]
        async with http.post(fake.url + "/__fake/reset") as r:
            assert r.status == 200
        assert fake.requests == [] and fake.pending == 0
