"""The request log's text: what is extracted from bodies and replies, what is redacted, how it is capped."""

from __future__ import annotations

import pytest

from turnout.gateway.request_log import Redactor, RequestLog, RequestLogOptions, cap, prompt_text, reply_text

redact = Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my key is sk-proj-abcdefghijklmnop0123456789", "my key is [REDACTED:api_key]"),
        ("claude: sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", "claude: [REDACTED:api_key]"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [REDACTED:api_key]"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [REDACTED:api_key] here"),
        ("Authorization: Bearer abc.def-ghi_123456", "Authorization: [REDACTED:bearer_token]"),
        ("mail jane.doe+x@example.co.uk now", "mail [REDACTED:email] now"),
        ("card 4111 1111 1111 1111 exp", "card [REDACTED:card] exp"),
        ("card 4111-1111-1111-1112 fails Luhn", "card 4111-1111-1111-1112 fails Luhn"),
        ("order 1234567890123 shipped", "order 1234567890123 shipped"),
        ("password=hunter2hunter and more", "password=[REDACTED:secret] and more"),
        ('api_key: "abcd1234efgh"', "api_key: [REDACTED:secret]"),
        ("ssn 123-45-6789", "ssn [REDACTED:ssn]"),
        ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [REDACTED:iban]"),
        ("call +1 415 555 2671 today", "call [REDACTED:phone] today"),
        ("call +49 30 1234567 or (415) 555-2671", "call [REDACTED:phone] or [REDACTED:phone]"),
        ("version 1.2.3 build 2026-12-06 port 8080", "version 1.2.3 build 2026-12-06 port 8080"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt [REDACTED:jwt]",
        ),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[REDACTED:private_key]"),
        ("Name three colors.", "Name three colors."),
        ("export API_KEY=sk-proj-abcdefghijklmnop0123456789", "export API_KEY=[REDACTED:secret]"),
        ("the risk-assessment-framework-v2 plan", "the risk-assessment-framework-v2 plan"),  # not a key: mid-word
        ("follow @turnout.io on socials", "follow @turnout.io on socials"),  # a handle, not an address
        ("token sk-abcdefghijklmnopqrstu, mail a@b.io", "token [REDACTED:api_key], mail [REDACTED:email]"),
    ],
)
def test_secrets_and_personal_data_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_extra_patterns_are_redacted_as_custom() -> None:
    assert Redactor([r"ACME-\d{6}"])("ticket ACME-123456 open") == "ticket [REDACTED:custom] open"


def test_a_bad_extra_pattern_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="is not a regular expression"):
        RequestLogOptions(extra_patterns=["(unclosed"])


def test_cap_says_how_much_was_cut() -> None:
    assert cap("x" * 10, 10) == "x" * 10
    assert cap("x" * 25, 10) == "x" * 10 + "\n[… truncated: the original had 25 characters]"
    assert cap("x" * 5, 10, original_chars=30) == "x" * 5 + "\n[… truncated: the original had 30 characters]"


def test_prompt_text_of_chat_completion_and_embedding_bodies() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ]
    }
    assert prompt_text(body) == "system: Be brief.\nuser: What is this?\n[image]"
    assert prompt_text({"prompt": "def f():"}) == "def f():"
    assert prompt_text({"input": ["a", "b"]}) == "a\nb"


def test_reply_text_of_whole_and_streamed_replies() -> None:
    whole = {"choices": [{"message": {"role": "assistant", "content": "Hi there"}}]}
    assert reply_text(whole) == "Hi there"
    calls = {
        "choices": [
            {"message": {"content": None, "tool_calls": [{"function": {"name": "get", "arguments": '{"a":1}'}}]}}
        ]
    }
    assert reply_text(calls) == '[tool call get({"a":1})]'
    streamed = [
        [{"choices": [{"delta": {"role": "assistant", "content": ""}}]}],
        [{"choices": [{"delta": {"content": "Hel"}}]}, {"choices": [{"delta": {"content": "lo"}}]}],
        [{"choices": [], "usage": {"completion_tokens": 2}}],
    ]
    assert reply_text(streamed) == "Hello"
    assert reply_text({"object": "list", "data": [{"embedding": [0.1]}]}) == "[1 embedding(s)]"
    assert reply_text(None) is None


def test_fill_turns_kept_references_into_redacted_capped_text() -> None:
    log = RequestLog(RequestLogOptions(enabled=True, max_chars=100))
    event = {
        "request_id": "r1",
        "_body": {"messages": [{"role": "user", "content": "mail me at a@b.io " + "y" * 200}]},
        "_reply": {"choices": [{"message": {"content": "ok"}}]},
    }
    out = log.fill(event)
    assert set(out) == {"request_id", "prompt", "reply"}
    assert out["prompt"].startswith("user: mail me at [REDACTED:email] yyy")
    assert out["prompt"].endswith("y\n[… truncated: the original had 224 characters]")
    assert len(out["prompt"]) == 100 + len("\n[… truncated: the original had 224 characters]")
    assert out["reply"] == "ok"


def test_fill_drops_the_references_when_the_log_is_off() -> None:
    out = RequestLog(RequestLogOptions(enabled=False)).fill({"request_id": "r1", "_body": {"prompt": "x"}})
    assert out == {"request_id": "r1"}
