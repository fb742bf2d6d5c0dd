"""The simulated fleet speaks the real wire protocols: checked with the official ``ollama`` and
``openai`` clients against ``python -m turnout.fakefleet`` on free ports."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

pytestmark = pytest.mark.integration

FLEET_YAML = Path(__file__).resolve().parents[1] / "fixtures" / "fleet" / "test_fleet.yaml"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@dataclass
class RunningFleet:
    proc: subprocess.Popen[bytes]
    line: dict[str, Any]

    @property
    def ollama_url(self) -> str:
        return str(self.line["urls"]["ollama"])

    @property
    def openai_url(self) -> str:
        return str(self.line["urls"]["openai"])

    @property
    def admin(self) -> str:
        return str(self.line["urls"]["admin"])


def start_fleet(*extra: str, timeout: float = 20.0) -> RunningFleet:
    argv = [sys.executable, "-m", "turnout.fakefleet", "--config", str(FLEET_YAML), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result: dict[str, Any] = {}

    def read() -> None:
        assert proc.stdout is not None
        result["line"] = proc.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not result.get("line"):
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"fakefleet did not announce its ports:\n{err.decode()}")
    return RunningFleet(proc, orjson.loads(result["line"]))


@pytest.fixture(scope="module")
def fleet() -> Iterator[RunningFleet]:
    running = start_fleet("--port", "ollama=0", "--port", "openai=0")
    try:
        yield running
    finally:
        running.proc.terminate()
        running.proc.communicate(timeout=10)  # reads and closes both pipes


@pytest.fixture(scope="module")
def admin(fleet: RunningFleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.admin, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
def _reset(admin: httpx.Client) -> None:
    admin.post("/_fleet/reset").raise_for_status()


@pytest.fixture
def oc(fleet: RunningFleet) -> Iterator[ollama.Client]:
    client = ollama.Client(host=fleet.ollama_url, timeout=10)
    yield client
    client.close()


@pytest.fixture
def ai(fleet: RunningFleet) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fleet.openai_url, api_key="unused", max_retries=0, timeout=10) as client:
        yield client


def fail(fleet: RunningFleet, **body: Any) -> None:
    with httpx.Client(base_url=fleet.admin) as admin:
        admin.post("/_fleet/fail", json=body).raise_for_status()


def stats(fleet: RunningFleet) -> dict[str, Any]:
    with httpx.Client(base_url=fleet.admin) as admin:
        return dict(admin.get("/_fleet/stats").json())


# --- the start-up line -------------------------------------------------------------------------


def test_startup_line_names_every_listener_with_its_bound_port(fleet: RunningFleet) -> None:
    line = fleet.line
    assert set(line["listeners"]) == {"ollama", "openai"}
    assert all(p > 0 for p in line["listeners"].values())
    assert line["ports"] == {**line["listeners"], "admin": line["listeners"]["ollama"]}
    assert line["urls"]["openai"] == f"http://127.0.0.1:{line['listeners']['openai']}/v1"
    assert line["dialects"] == {"ollama": "ollama", "openai": "openai"}
    assert line["host_labels"] == {"ollama": "test-gpu-0", "openai": "test-gpu-1"}
    assert line["vram_total_bytes"] == {"ollama": 10 * 2**30, "openai": None}
    assert line["backends"] == (
        f"fleet-ollama:ollama={line['urls']['ollama']},fleet-openai:openai={line['urls']['openai']}"
    )


def test_default_fleet_starts_and_shortcut_port_flags_work() -> None:
    running = start_fleet("--config", "", "--ollama-port", "0", "--openai-port", "0")
    try:
        names = [m["name"] for m in httpx.get(f"{running.ollama_url}/api/tags").json()["models"]]
        assert {"llama3.2:1b", "qwen2.5-coder:7b", "llama3.1:8b", "llava:7b", "nomic-embed-text:latest"} <= set(names)
        ids = [m["id"] for m in httpx.get(f"{running.openai_url}/models").json()["data"]]
        assert len(ids) == 3 and "Qwen3-4B-Q4_K_M" in ids
    finally:
        running.proc.terminate()
        running.proc.communicate(timeout=10)  # reads and closes both pipes


# --- Ollama dialect ----------------------------------------------------------------------------


def test_ollama_list_and_show_describe_models(oc: ollama.Client) -> None:
    listed = {m.model: m for m in oc.list().models}
    assert set(listed) >= {"tiny:1b", "coder:7b", "vision:7b", "embed:latest"}
    assert listed["tiny:1b"].details is not None
    assert listed["tiny:1b"].details.parameter_size == "1.2B"
    assert listed["embed:latest"].details is not None
    assert listed["embed:latest"].details.parameter_size == "137M"
    shown = oc.show("coder:7b")
    assert shown.capabilities == ["completion", "tools", "insert"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["qwen2.context_length"] == 32768
    assert shown.details is not None
    assert (shown.details.family, shown.details.quantization_level) == ("qwen2", "Q4_K_M")
    assert oc.show("vision:7b").capabilities == ["completion", "vision"]


def test_ollama_chat_is_deterministic_streamed_or_not(oc: ollama.Client) -> None:
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    whole = oc.chat(model="tiny:1b", messages=messages, stream=False)
    again = oc.chat(model="tiny:1b", messages=messages, stream=False)
    assert whole.message.content == again.message.content
    assert "The answer is 42." in (whole.message.content or "")  # accuracy 1.0
    assert (whole.done, whole.done_reason, whole.eval_count) == (True, "stop", 24)
    assert whole.prompt_eval_count and whole.prompt_eval_count > 0
    assert whole.total_duration and whole.eval_duration and whole.load_duration
    chunks = list(oc.chat(model="tiny:1b", messages=messages, stream=True))
    assert len(chunks) == 25
    assert all(not c.done for c in chunks[:-1])
    assert "".join(c.message.content or "" for c in chunks) == whole.message.content
    last = chunks[-1]
    assert (last.done, last.done_reason, last.eval_count, last.message.content) == (True, "stop", 24, "")


def test_ollama_stream_is_ndjson_on_the_wire(fleet: RunningFleet) -> None:
    body = {"model": "tiny:1b", "messages": [{"role": "user", "content": "hi"}]}  # stream defaults to true
    with httpx.stream("POST", f"{fleet.ollama_url}/api/chat", json=body) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [orjson.loads(line) for line in r.iter_lines() if line]
    assert lines[0]["message"]["role"] == "assistant"
    assert set(lines[-1]) >= {"total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration"}
    r2 = httpx.post(f"{fleet.ollama_url}/api/generate", json={"model": "tiny:1b", "prompt": "hi", "stream": False})
    assert r2.headers["content-type"] == "application/json"
    assert r2.json()["done"] is True


def test_ollama_num_predict_truncates_with_done_reason_length(oc: ollama.Client) -> None:
    r = oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 5}, stream=False)
    assert (r.done_reason, r.eval_count) == ("length", 5)
    g = oc.generate(model="tiny:1b", prompt="hi", options={"num_predict": 3})
    assert (g.done_reason, g.eval_count) == ("length", 3)


def test_ollama_tools_give_tool_calls_with_object_arguments(oc: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris today?"}]
    r = oc.chat(model="tiny:1b", messages=messages, tools=[WEATHER_TOOL], stream=False)
    assert r.message.tool_calls is not None
    call = r.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    messages += [r.message, {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather"}]
    final = oc.chat(model="tiny:1b", messages=messages, tools=[WEATHER_TOOL], stream=False)
    assert not final.message.tool_calls
    assert final.message.content


def test_ollama_refuses_tools_and_images_the_model_cannot_take(oc: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="big:14b", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER_TOOL])
    assert (err.value.status_code, err.value.error) == (400, "big:14b does not support tools")
    image_msg = [{"role": "user", "content": "what is this?", "images": [PIXEL]}]
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="tiny:1b", messages=image_msg, stream=False)
    assert (err.value.status_code, err.value.error) == (400, "this model is missing data required for image input")
    assert oc.chat(model="vision:7b", messages=image_msg, stream=False).message.content
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="embed:latest", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert (err.value.status_code, err.value.error) == (400, '"embed:latest" does not support chat')
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], think=True, stream=False)
    assert (err.value.status_code, err.value.error) == (400, '"tiny:1b" does not support thinking')
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert (err.value.status_code, err.value.error) == (404, "model 'nope:1b' not found")


def test_ollama_embeddings_are_deterministic_unit_vectors(oc: ollama.Client) -> None:
    r = oc.embed(model="embed:latest", input=["the cat sat", "the cat sat", "quantum chromodynamics"])
    a, b, c = r.embeddings
    assert len(a) == 384 and a == b
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-6)
    near = oc.embed(model="embed:latest", input="the cat sat down").embeddings[0]
    assert sum(x * y for x, y in zip(a, near, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True))
    legacy = oc.embeddings(model="embed:latest", prompt="the cat sat")
    assert list(legacy.embedding) == pytest.approx(a)


def test_ps_tracks_residency_and_keep_alive_zero_unloads(oc: ollama.Client) -> None:
    assert oc.ps().models == []
    oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], stream=False)
    loaded = oc.generate(model="coder:7b", prompt="")  # an empty prompt only loads the model
    assert (loaded.done, loaded.done_reason) == (True, "load")
    ps = {m.model: m for m in oc.ps().models}
    assert set(ps) == {"tiny:1b", "coder:7b"}
    assert (ps["tiny:1b"].size, ps["tiny:1b"].size_vram) == (2 * 2**30, 2 * 2**30)
    assert ps["tiny:1b"].expires_at is not None and ps["tiny:1b"].expires_at.timestamp() > time.time() + 250
    unloaded = oc.generate(model="tiny:1b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert [m.model for m in oc.ps().models] == ["coder:7b"]
    oc.chat(model="coder:7b", messages=[], keep_alive=0)  # Ollama's other unload verb
    assert oc.ps().models == []


def test_keep_alive_expiry_unloads_an_idle_model(oc: ollama.Client) -> None:
    oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], keep_alive="300ms", stream=False)
    oc.generate(model="coder:7b", prompt="", keep_alive=-1)  # forever
    assert {m.model for m in oc.ps().models} == {"tiny:1b", "coder:7b"}
    time.sleep(0.5)
    ps = oc.ps().models
    assert [m.model for m in ps] == ["coder:7b"]
    assert ps[0].expires_at is not None and ps[0].expires_at.year > time.gmtime().tm_year + 5


def test_loading_beyond_vram_fails_like_ollama(oc: ollama.Client, fleet: RunningFleet) -> None:
    oc.generate(model="tiny:1b", prompt="")
    oc.generate(model="coder:7b", prompt="")
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="big:14b", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert err.value.status_code == 500
    assert err.value.error == "model requires more system memory (8.0 GiB) than is available (3.0 GiB)"
    assert {m.model for m in oc.ps().models} == {"tiny:1b", "coder:7b"}
    oc.generate(model="coder:7b", prompt="", keep_alive=0)
    assert oc.chat(model="big:14b", messages=[{"role": "user", "content": "hi"}], stream=False).done
    st = stats(fleet)["listeners"]["ollama"]
    assert (st["vram_used_bytes"], st["vram_total_bytes"]) == ((2 + 8) * 2**30, 10 * 2**30)
    assert st["loaded"] == ["tiny:1b", "big:14b"]
    assert st["loads"] == {"tiny:1b": 1, "coder:7b": 1, "big:14b": 1}
    assert st["unloads"] == {"coder:7b": 1}


def test_ollama_version_and_root(fleet: RunningFleet) -> None:
    assert httpx.get(f"{fleet.ollama_url}/api/version").json()["version"]
    assert httpx.get(f"{fleet.ollama_url}/").text == "Ollama is running"


# --- OpenAI dialect ----------------------------------------------------------------------------


def test_openai_models_and_chat(ai: openai.OpenAI) -> None:
    assert [m.id for m in ai.models.list()] == ["Small-Instruct-3B", "Vision-4B", "embed-small"]
    r = ai.chat.completions.create(model="Small-Instruct-3B", messages=[{"role": "user", "content": "What is 2 * 21?"}])
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    choice = r.choices[0]
    assert (choice.finish_reason, choice.message.role) == ("stop", "assistant")
    assert "The answer is 42." not in (choice.message.content or "")  # accuracy 0.0: always wrong
    assert "The answer is" in (choice.message.content or "")
    assert r.usage is not None
    assert (r.usage.completion_tokens, r.usage.total_tokens) == (24, r.usage.prompt_tokens + 24)


def test_openai_stream_has_role_delta_content_finish_and_usage(ai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about trains"}]
    whole = ai.chat.completions.create(model="Small-Instruct-3B", messages=messages)
    chunks = list(
        ai.chat.completions.create(
            model="Small-Instruct-3B", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(ai.chat.completions.create(model="Small-Instruct-3B", messages=messages, stream=True))
    assert all(c.choices for c in plain)


def test_openai_sse_wire_format(fleet: RunningFleet) -> None:
    body = {"model": "Small-Instruct-3B", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{fleet.openai_url}/chat/completions", json=body) as r:
        assert r.headers["content-type"] == "text/event-stream"
        raw = r.read()
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: {") for e in events[:-2])


def test_openai_tool_calls_whole_and_streamed(ai: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "What is the weather in Oslo?"}]
    r = ai.chat.completions.create(model="Small-Instruct-3B", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, orjson.loads(call.function.arguments)) == (
        "get_weather",
        {"city": "Oslo", "unit": "celsius"},
    )
    stream = ai.chat.completions.create(
        model="Small-Instruct-3B",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    parts = [c.choices[0] for c in stream]
    deltas = [tc for p in parts for tc in (p.delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == call.function.arguments
    assert parts[-1].finish_reason == "tool_calls"
    none = ai.chat.completions.create(
        model="Small-Instruct-3B",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


def test_openai_completions_whole_and_streamed(ai: openai.OpenAI) -> None:
    whole = ai.completions.create(model="Small-Instruct-3B", prompt="Once upon a time", max_tokens=6)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    chunks = list(
        ai.completions.create(model="Small-Instruct-3B", prompt="Once upon a time", max_tokens=6, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_embeddings_float_and_base64_agree(ai: openai.OpenAI) -> None:
    default = ai.embeddings.create(model="embed-small", input=["alpha beta", "gamma"])  # the SDK asks for base64
    floats = ai.embeddings.create(model="embed-small", input=["alpha beta", "gamma"], encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert len(floats.data[1].embedding) == 384
    short = ai.embeddings.create(model="embed-small", input="alpha", dimensions=64, encoding_format="float")
    assert len(short.data[0].embedding) == 64
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0


def test_openai_errors_have_the_openai_shape(ai: openai.OpenAI, fleet: RunningFleet) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        ai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.code == "model_not_found"
    image: Any = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}
    ]
    with pytest.raises(openai.BadRequestError):
        ai.chat.completions.create(model="Small-Instruct-3B", messages=image)
    assert ai.chat.completions.create(model="Vision-4B", messages=image).choices[0].message.content
    with pytest.raises(openai.BadRequestError):
        ai.embeddings.create(model="Small-Instruct-3B", input="hi")
    r = httpx.post(f"{fleet.openai_url}/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_ollama_listener_also_speaks_openai_v1(fleet: RunningFleet) -> None:
    with openai.OpenAI(base_url=f"{fleet.ollama_url}/v1", api_key="ollama", max_retries=0) as client:
        assert "tiny:1b" in [m.id for m in client.models.list()]
        r = client.chat.completions.create(model="tiny:1b", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content
    assert "tiny:1b" in [m["model"] for m in httpx.get(f"{fleet.ollama_url}/api/ps").json()["models"]]


# --- pacing ------------------------------------------------------------------------------------


def test_stream_is_paced_by_ttft_and_tokens_per_second(fleet: RunningFleet) -> None:
    body = {"model": "slow:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    t0 = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", f"{fleet.ollama_url}/api/chat", json=body) as r:
        for line in r.iter_lines():
            if line:
                arrivals.append(time.perf_counter() - t0)
    assert len(arrivals) == 11
    assert arrivals[0] >= 0.08  # ttft_ms: 80
    assert arrivals[-1] - arrivals[0] >= 9 / 50 * 0.9  # ten tokens at 50/s


def test_prefill_delays_the_first_token_and_ollamas_counters_follow_it(fleet: RunningFleet) -> None:
    def chat(content: str) -> dict[str, Any]:
        body = {"model": "slow:1b", "messages": [{"role": "user", "content": content}], "stream": True}
        t0 = time.perf_counter()
        first = None
        with httpx.stream("POST", f"{fleet.ollama_url}/api/chat", json=body) as r:
            for line in r.iter_lines():
                if line:
                    first = first if first is not None else time.perf_counter() - t0
                    last = orjson.loads(line)
        return {**last, "first_s": first}

    short, long = chat("hi"), chat("word " * 800)  # ~5 and ~1,000 prompt tokens
    assert short["prompt_eval_count"] == 5 and long["prompt_eval_count"] == 1004
    assert long["first_s"] >= 0.08 + 1004 / 2000  # ttft_ms + the prompt at prefill_tokens_per_s: 2000
    assert short["prompt_eval_duration"] / 1e9 == pytest.approx(0.08 + 5 / 2000, abs=0.03)
    slope = (long["prompt_eval_count"] - short["prompt_eval_count"]) / (
        (long["prompt_eval_duration"] - short["prompt_eval_duration"]) / 1e9
    )
    assert slope == pytest.approx(2000, rel=0.1)


def test_zero_delay_models_answer_fast(fleet: RunningFleet) -> None:
    body = {"model": "Small-Instruct-3B", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=fleet.openai_url) as client:
        client.post("/chat/completions", json=body).raise_for_status()
        t0 = time.perf_counter()
        for _ in range(50):
            client.post("/chat/completions", json=body).raise_for_status()
        per_request = (time.perf_counter() - t0) / 50
    assert per_request < 0.03


# --- failure injection -------------------------------------------------------------------------


def test_fail_500_on_a_model_until_ok(ai: openai.OpenAI, fleet: RunningFleet) -> None:
    msg: Any = [{"role": "user", "content": "hi"}]
    fail(fleet, model="Small-Instruct-3B", mode="500")
    with pytest.raises(openai.InternalServerError):
        ai.chat.completions.create(model="Small-Instruct-3B", messages=msg)
    assert ai.chat.completions.create(model="Vision-4B", messages=msg).choices
    fail(fleet, model="Small-Instruct-3B", mode="ok")
    assert ai.chat.completions.create(model="Small-Instruct-3B", messages=msg).choices
    st = stats(fleet)["listeners"]["openai"]
    assert st["requests"] == {"Small-Instruct-3B": 2, "Vision-4B": 1}
    assert st["errors"] == {"Small-Instruct-3B": 1}


def test_fail_times_and_custom_status(oc: ollama.Client, fleet: RunningFleet) -> None:
    fail(fleet, listener="ollama", mode="error", status=503, times=1)
    with pytest.raises(ollama.ResponseError) as err:
        oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert err.value.status_code == 503
    assert oc.chat(model="tiny:1b", messages=[{"role": "user", "content": "hi"}], stream=False).done


def test_fail_close_and_hang_look_like_a_dead_backend(ai: openai.OpenAI, fleet: RunningFleet) -> None:
    msg: Any = [{"role": "user", "content": "hi"}]
    fail(fleet, listener="openai", mode="close")
    with pytest.raises(openai.APIConnectionError):
        ai.chat.completions.create(model="Small-Instruct-3B", messages=msg)
    fail(fleet, listener="openai", mode="hang")
    with pytest.raises(openai.APITimeoutError):
        ai.with_options(timeout=0.5).chat.completions.create(model="Small-Instruct-3B", messages=msg)
    fail(fleet, listener="openai", mode="ok")
    assert ai.chat.completions.create(model="Small-Instruct-3B", messages=msg).choices


def test_fail_cut_drops_the_stream_after_the_first_token(ai: openai.OpenAI, fleet: RunningFleet) -> None:
    fail(fleet, model="Small-Instruct-3B", mode="cut")
    got = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in ai.chat.completions.create(
            model="Small-Instruct-3B", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            got.append(chunk)
    assert 1 <= len(got) < 5


def test_error_rate_injects_seeded_500s(oc: ollama.Client, fleet: RunningFleet) -> None:
    outcomes = []
    for _ in range(40):
        try:
            oc.generate(model="flaky:1b", prompt="hi")
            outcomes.append("ok")
        except ollama.ResponseError as err:
            assert err.status_code == 500
            outcomes.append("500")
    assert 8 < outcomes.count("500") < 32
    assert stats(fleet)["listeners"]["ollama"]["errors"] == {"flaky:1b": outcomes.count("500")}
    httpx.post(f"{fleet.admin}/_fleet/reset").raise_for_status()
    again = []
    for _ in range(40):
        try:
            oc.generate(model="flaky:1b", prompt="hi")
            again.append("ok")
        except ollama.ResponseError:
            again.append("500")
    assert again == outcomes  # the RNG is seeded (and reseeded by reset)


def test_admin_rejects_bad_failure_requests(fleet: RunningFleet) -> None:
    r = httpx.post(f"{fleet.admin}/_fleet/fail", json={"model": "nope", "mode": "explode"})
    assert r.status_code == 400
    assert "mode must be one of" in r.json()["error"] and "no model 'nope'" in r.json()["error"]
