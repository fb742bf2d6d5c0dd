import logging
import os
import re
import textwrap

import pytest

from tests.unit.routing_catalog import Router
from turnout.scorer.rules import Rules, RulesStore
from turnout.scorer.scoring import ModelSpec

RULES = textwrap.dedent(
    r"""
    aliases:
      gpt-4: llama3.3:70b
      '/gpt-3\.5-turbo(-\d+)?/': llama3.1:8b
      '/local-(.+)/': '\1'
    clients:
      - match: {ip: 10.1.0.0/16}
        backends: [ollama-b]
        quality: 0.2
      - match: {key: team-research}
        model: llama3.3:70b
    allow: ["llama*", "qwen*", "llava*"]
    block: ["*:70b"]
    tiers: {"llama3.1:8b": medium}
    pins: {coding: qwen2.5-coder:32b}
    """
)


@pytest.fixture
def rules() -> Rules:
    return Rules.parse(RULES)


def test_exact_and_regex_aliases_with_capture_groups(rules):
    assert rules.resolve_alias("gpt-4") == "llama3.3:70b"
    assert rules.resolve_alias("gpt-3.5-turbo-0125") == "llama3.1:8b"
    assert rules.resolve_alias("gpt-3.5-turbo") == "llama3.1:8b"
    assert rules.resolve_alias("local-qwen2.5:7b") == "qwen2.5:7b"
    assert rules.resolve_alias("gpt-4o") is None  # regexes match the whole name


def test_client_rules_by_ip_network_and_key(rules):
    assert rules.client_rule("10.1.2.3").backends == frozenset({"ollama-b"})
    assert rules.client_rule("ip:10.1.2.3").quality == 0.2
    assert rules.client_rule("10.2.0.1") is None
    assert rules.client_rule("team-research").model == "llama3.3:70b"
    assert rules.client_rule("key:team-research").model == "llama3.3:70b"
    assert rules.client_rule(None) is None


def test_allow_and_block_lists(rules):
    assert rules.is_allowed("llama3.1:8b")
    assert not rules.is_allowed("llama3.3:70b")  # blocked wins
    assert not rules.is_allowed("mistral:7b")  # not allowed


def test_constraints_for_a_request(rules):
    router = Router()
    c = rules.constraints(None, "10.1.0.9", "coding", router.table)
    assert (c.pinned, c.backends, c.quality) == ("qwen2.5-coder:32b", frozenset({"ollama-b"}), 0.2)
    assert c.allowed is not None and c.blocked is not None
    assert [router.table.specs[i].name for i in c.blocked.nonzero()[0]] == ["llama3.3:70b"]
    forced = rules.constraints(None, "team-research", "general", router.table)
    assert (forced.requested, forced.requested_how) == ("llama3.3:70b", "client rule: always llama3.3:70b")
    aliased = rules.constraints("local-llama3.2:1b", None, "general", router.table)
    assert (aliased.requested, aliased.requested_how) == ("llama3.2:1b", "alias 'local-llama3.2:1b' -> llama3.2:1b")


def test_rules_steer_the_ranking(rules):
    router = Router()
    cons = rules.constraints(None, "10.1.0.9", "general", router.table)
    r = router.route("Tell me about Lisbon", cons=cons, limit=None)
    assert {c.backend for c in r.candidates} == {"ollama-b"}
    assert "llama3.3:70b" not in {c.model for c in r.candidates}
    assert r.candidates[0].terms  # scored with the client's quality preference 0.2


def test_ip_rules_still_match_when_clients_send_api_keys():
    """With API keys configured the gateway's client is the key id; the address comes apart in
    ``client_ip``. IP rules used to see only the key id and never matched again."""
    rules = Rules.parse(
        textwrap.dedent(
            """
            clients:
              - match: {key: key-aaaa, ip: 192.168.0.0/16}
                quality: 0.9
              - match: {ip: 10.1.0.0/16}
                backends: [ollama-b]
              - match: {key: key-aaaa}
                quality: 0.1
            """
        )
    )
    assert rules.client_rule("key-bbbb", "10.1.2.3").backends == frozenset({"ollama-b"})
    assert rules.client_rule("key-aaaa", "192.168.7.7").quality == 0.9
    assert rules.client_rule("key-aaaa", "172.16.0.1").quality == 0.1
    assert rules.client_rule("key-bbbb", "172.16.0.1") is None
    assert rules.client_rule("10.1.0.1").backends == frozenset({"ollama-b"})  # no keys: client is the address
    router = Router((ModelSpec("llama3.2:latest", 3),))
    assert rules.constraints(None, "key-cccc", "general", router.table, "10.1.9.9").backends == frozenset({"ollama-b"})


def test_bare_name_resolves_to_the_only_tagged_match():
    router = Router((ModelSpec("qwen3:4b", 4), ModelSpec("llama3.1:8b", 8), ModelSpec("llama3.1:70b", 70)))
    c = Rules().constraints("qwen3", None, "general", router.table)
    assert (c.requested, c.requested_how) == ("qwen3:4b", "'qwen3' is 'qwen3:4b'")
    assert Rules().constraints("llama3.1", None, "general", router.table).requested == "llama3.1"  # two tags


def test_bare_name_resolves_to_latest():
    from turnout.scorer.scoring import ModelSpec

    router = Router((ModelSpec("llama3.2:latest", 3),))
    c = Rules().constraints("llama3.2", None, "general", router.table)
    assert (c.requested, c.requested_how) == ("llama3.2:latest", "'llama3.2' is 'llama3.2:latest'")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("aliases: [", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("tiers: {x: huge}\n", "is not one of small, medium, large"),
        ("aliases: {'/(unclosed/': x}\n", "alias /(unclosed/"),
        ("clients: [{match: {ip: not-an-ip}}]\n", "invalid rules"),
        ("clients: [{match: {}}]\n", "at least one of key, client, ip"),
        ("colour: blue\n", "invalid rules"),
    ],
)
def test_invalid_rules_are_rejected_with_a_readable_message(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Rules.parse(text)


def test_store_hot_reloads_and_keeps_previous_rules_on_a_bad_file(tmp_path, caplog):
    path = tmp_path / "rules.yaml"
    path.write_text("aliases: {fast: llama3.2:1b}\n")
    store = RulesStore(path, poll_s=0.01)
    assert store.current.resolve_alias("fast") == "llama3.2:1b"
    assert store.maybe_reload() is False  # unchanged

    path.write_text("aliases: {fast: llama3.1:8b}\n")
    os.utime(path, (1, 1))
    assert store.maybe_reload() is True
    assert store.current.resolve_alias("fast") == "llama3.1:8b"

    good = store.current.version
    path.write_text("aliases: [broken\n")
    os.utime(path, (2, 2))
    with caplog.at_level(logging.ERROR, logger="turnout.scorer.rules"):
        assert store.maybe_reload() is False
    assert store.current.version == good
    assert store.current.resolve_alias("fast") == "llama3.1:8b"
    assert store.last_error and "not valid YAML" in store.last_error
    assert any("rejected" in r.message for r in caplog.records)

    path.write_text("aliases: {fast: qwen2.5-coder:32b}\n")
    assert store.reload() is True  # on demand (POST /admin/reload)
    assert store.current.resolve_alias("fast") == "qwen2.5-coder:32b"


def test_missing_file_means_no_rules(tmp_path):
    store = RulesStore(tmp_path / "nope.yaml")
    assert store.current.version == "none"
    assert store.current.resolve_alias("gpt-4") is None
    assert RulesStore(None).maybe_reload() is False


async def test_watch_picks_up_a_changed_file(tmp_path):
    import asyncio

    path = tmp_path / "rules.yaml"
    path.write_text("pins: {coding: a}\n")
    store = RulesStore(path, poll_s=0.01)
    task = asyncio.create_task(store.watch())
    try:
        path.write_text("pins: {coding: bb}\n")
        os.utime(path, (5, 5))
        for _ in range(200):
            if store.current.pins.get("coding") == "bb":
                break
            await asyncio.sleep(0.01)
        assert store.current.pins["coding"] == "bb"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
