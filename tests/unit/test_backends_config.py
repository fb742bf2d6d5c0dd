"""Backend configuration: the compact/JSON/YAML forms, model globs and name prefixes."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.common.backends.config import BackendConfig, BackendKind, load_backends_file, parse_backends
from turnout.common.errors import ConfigError


def test_empty_values_mean_no_backends() -> None:
    assert parse_backends(None) == []
    assert parse_backends("") == []
    assert parse_backends("  ,  ") == []


def test_unnamed_entries_are_named_after_their_kind_and_numbered() -> None:
    got = parse_backends("ollama=http://a:1,openai=http://b:2/v1,ollama=http://c:3,OpenAI=https://d")
    assert [(b.name, b.kind) for b in got] == [
        ("ollama", BackendKind.OLLAMA),
        ("openai", BackendKind.OPENAI),
        ("ollama2", BackendKind.OLLAMA),
        ("openai2", BackendKind.OPENAI),
    ]


def test_a_list_of_dicts_or_configs_is_accepted() -> None:
    cfg = BackendConfig(name="x", kind=BackendKind.OLLAMA, url="http://x:1")
    got = parse_backends([cfg, {"name": "y", "kind": "openai", "url": "http://y:2/"}])
    assert got[0] is cfg
    assert got[1].url == "http://y:2"


@pytest.mark.parametrize(
    ("include", "exclude", "model", "wanted"),
    [
        (("*",), (), "llama3.2:3b", True),
        (("*",), ("*embed*",), "nomic-embed-text", False),
        (("qwen*", "llama*"), (), "llama3.2:3b", True),
        (("qwen*",), (), "llama3.2:3b", False),
        (("qwen*",), ("qwen3:30b*",), "qwen3:30b-a3b", False),
    ],
)
def test_include_and_exclude_globs(
    include: tuple[str, ...], exclude: tuple[str, ...], model: str, wanted: bool
) -> None:
    b = BackendConfig(name="b", kind=BackendKind.OLLAMA, url="http://b", include=include, exclude=exclude)
    assert b.wants(model) is wanted


def test_prefix_maps_public_and_upstream_names() -> None:
    b = BackendConfig(name="cloud", kind=BackendKind.OPENAI, url="https://api.example.com/v1", prefix="cloud/")
    assert b.public_name("gpt-4o") == "cloud/gpt-4o"
    assert b.upstream_name("cloud/gpt-4o") == "gpt-4o"
    assert b.upstream_name("gpt-4o") is None
    plain = BackendConfig(name="local", kind=BackendKind.OLLAMA, url="http://localhost:11434")
    assert plain.upstream_name("llama3.2:3b") == "llama3.2:3b"


@pytest.mark.parametrize(
    ("url", "base"),
    [("http://vllm:8000/v1", "http://vllm:8000/v1"), ("http://llamacpp:8081", "http://llamacpp:8081/v1")],
)
def test_openai_base_appends_v1_once(url: str, base: str) -> None:
    assert BackendConfig(name="o", kind=BackendKind.OPENAI, url=url).openai_base == base


def test_yaml_file_may_be_a_bare_list(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("- {name: a, kind: ollama, url: 'http://a:11434'}\n")
    assert [b.name for b in load_backends_file(f)] == ["a"]


def test_empty_yaml_file_means_no_backends(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("")
    assert load_backends_file(f) == []


def test_broken_yaml_file_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("backends: [ {name: a\n")
    with pytest.raises(ConfigError, match=r"cannot read backends file .*b\.yaml"):
        load_backends_file(f)


def test_invalid_entry_in_yaml_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text(
        "backends:\n  - {name: a, kind: ollama, url: 'http://a'}\n  - {name: a, kind: ollama, url: 'http://b'}\n"
    )
    with pytest.raises(ConfigError, match=r"backends file .*b\.yaml: two backends are named 'a'"):
        load_backends_file(f)
