"""RPC envelopes (docs/rpc.md): encoding, validation, and errors rebuilt on the client."""

from __future__ import annotations

import time

import orjson
import pytest

from turnout.common.errors import (
    DeadlineExceeded,
    MalformedRequest,
    MethodNotFound,
    RemoteError,
    RpcError,
)
from turnout.common.rpc.client import RpcClient
from turnout.common.rpc.contract import ALL_METHODS, ROUTE_V1, RpcMethod
from turnout.common.rpc.envelope import (
    decode_request,
    encode_reply_error,
    encode_reply_ok,
    encode_request,
    error_from_reply,
    reply_call_id,
    reply_ok_body,
)
from turnout.common.schemas.route import CandidateV1, RouteReplyV1, RouteRequestV1


def _request(**over: object) -> bytes:
    args: dict[str, object] = {
        "call_id": "c1",
        "method": "scorer.route",
        "mv": 1,
        "budget_ms": 50,
        "request_id": "req-1",
        "reply_to": "sy:rpc:reply:gw-1",
        "body": b'{"text":"hi"}',
    }
    args.update(over)
    return encode_request(**args)  # type: ignore[arg-type]


def test_request_envelope_has_the_documented_fields() -> None:
    assert orjson.loads(_request()) == {
        "v": 1,
        "id": "c1",
        "method": "scorer.route",
        "mv": 1,
        "budget_ms": 50,
        "request_id": "req-1",
        "reply_to": "sy:rpc:reply:gw-1",
        "body": {"text": "hi"},
    }


def test_request_envelope_round_trips() -> None:
    env = decode_request(_request(request_id=None))
    assert (env["id"], env["method"], env["mv"], env["request_id"], env["body"]) == (
        "c1",
        "scorer.route",
        1,
        None,
        {"text": "hi"},
    )


def test_an_older_clients_absolute_deadline_becomes_a_budget() -> None:
    raw = orjson.dumps({"v": 1, "id": "x", "method": "m", "reply_to": "r", "deadline": time.time() + 2.0})
    assert 1900 < decode_request(raw)["budget_ms"] <= 2000


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "envelope is not JSON"),
        (b"[1, 2]", "envelope is not an object"),
        (
            b'{"v": 1, "method": "m", "reply_to": "r", "budget_ms": 1}',
            "envelope field 'id' missing or of the wrong type",
        ),
        (b'{"v": 1, "id": "x", "method": "m", "reply_to": "r", "budget_ms": "soon"}', "field 'budget_ms'"),
        (b'{"v": 1, "id": "x", "method": "m", "reply_to": "r", "budget_ms": true}', "field 'budget_ms'"),
        (b'{"v": 1, "id": "x", "method": "m", "reply_to": "r"}', "field 'budget_ms'"),
        (b'{"v": 2, "id": "x", "method": "m", "reply_to": "r", "budget_ms": 1}', "unsupported envelope version 2"),
    ],
)
def test_malformed_request_envelopes_are_rejected(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedRequest, match=message):
        decode_request(raw)


def test_ok_reply_envelope() -> None:
    raw = encode_reply_ok("c1", b'{"candidates":[]}')
    assert orjson.loads(raw) == {"v": 1, "id": "c1", "ok": True, "body": {"candidates": []}}


def test_error_reply_envelope_names_the_exception_type() -> None:
    assert orjson.loads(encode_reply_error("c1", ValueError("bad"))) == {
        "v": 1,
        "id": "c1",
        "ok": False,
        "error": {"type": "ValueError", "message": "bad"},
    }
    remote = RemoteError("boom", type_name="KeyError")
    assert orjson.loads(encode_reply_error("c2", remote))["error"] == {"type": "KeyError", "message": "boom"}


def test_error_messages_are_bounded() -> None:
    env = orjson.loads(encode_reply_error("c1", RuntimeError("x" * 10_000)))
    assert len(env["error"]["message"]) == 2000


@pytest.mark.parametrize("cls", [MalformedRequest, MethodNotFound, DeadlineExceeded])
def test_known_remote_errors_are_rebuilt_as_their_class(cls: type[RemoteError]) -> None:
    wire = orjson.loads(encode_reply_error("c1", cls("why")))["error"]
    exc = error_from_reply(wire)
    assert type(exc) is cls
    assert (str(exc), exc.type_name) == ("why", cls.__name__)
    assert isinstance(exc, RpcError)


def test_unknown_remote_errors_become_remote_error_with_the_type_name() -> None:
    exc = error_from_reply({"type": "ZeroDivisionError", "message": "division by zero"})
    assert type(exc) is RemoteError
    assert (exc.type_name, str(exc)) == ("ZeroDivisionError", "division by zero")


def test_client_decodes_ok_replies_into_the_typed_model_ignoring_unknown_fields() -> None:
    raw = encode_reply_ok(
        "c1",
        b'{"candidates":[{"model":"m","backend":"b","upstream_model":"m:1b","score":0.5,"new_field":1}],'
        b'"added_in_a_later_minor":"x"}',
    )
    reply = RpcClient._decode(ROUTE_V1, raw)
    assert reply == RouteReplyV1(candidates=[CandidateV1(model="m", backend="b", upstream_model="m:1b", score=0.5)])


def test_client_raises_the_rebuilt_error_for_error_replies() -> None:
    with pytest.raises(MethodNotFound, match="nope"):
        RpcClient._decode(ROUTE_V1, encode_reply_error("c1", MethodNotFound("nope")))


@pytest.mark.parametrize("raw", [b"garbage", b'{"v":1,"id":"c1","ok":true,"body":{"candidates":"many"}}'])
def test_client_turns_unreadable_replies_into_remote_error(raw: bytes) -> None:
    with pytest.raises(RemoteError, match="malformed reply for scorer.route.v1"):
        RpcClient._decode(ROUTE_V1, raw)


def test_methods_are_declared_once_with_name_version_and_types() -> None:
    assert ROUTE_V1 == RpcMethod("scorer.route", 1, RouteRequestV1, RouteReplyV1)
    assert ROUTE_V1.label == "scorer.route.v1"
    assert ROUTE_V1 in ALL_METHODS
    assert len({m.label for m in ALL_METHODS}) == len(ALL_METHODS)


@pytest.mark.parametrize("call_id", ["c1", "a" * 40, 'quo"te', "back\\slash", "ünï"])
def test_the_call_id_of_a_reply_is_read_off_its_head_or_parsed(call_id: str) -> None:
    assert reply_call_id(encode_reply_ok(call_id, b"{}")) == call_id
    assert reply_call_id(encode_reply_error(call_id, MethodNotFound("m"))) == call_id
    assert reply_call_id(orjson.dumps({"ok": True, "id": call_id, "v": 1})) == call_id  # another layout


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"v":1}', b'{"v":1,"id":3}', b'{"v":1,"id":"unterminated'])
def test_a_reply_without_a_call_id_has_none(raw: bytes) -> None:
    assert reply_call_id(raw) is None


def test_the_body_of_an_ok_reply_is_sliced_off_for_one_parse() -> None:
    body = RouteReplyV1(candidates=[CandidateV1(model="m", backend="b", upstream_model="m")]).model_dump_json().encode()
    assert reply_ok_body(encode_reply_ok("c1", body)) == body
    assert RpcClient._decode(ROUTE_V1, encode_reply_ok("c1", body)).candidates[0].model == "m"
    assert reply_ok_body(encode_reply_error("c1", MethodNotFound("m"))) is None
    assert reply_ok_body(encode_reply_ok('a"b', body)) is None  # escaped id: the generic parse
    assert RpcClient._decode(ROUTE_V1, encode_reply_ok('a"b', body)).candidates[0].model == "m"
