import pytest

from turnout.common.backends.names import parse_model_name


@pytest.mark.parametrize(
    ("name", "family", "total", "active", "quant"),
    [
        ("qwen3:30b-a3b", "qwen3", 30.0, 3.0, None),
        ("Qwen/Qwen3-30B-A3B", "qwen3", 30.0, 3.0, None),
        ("mixtral:8x7b", "mixtral", 56.0, 14.0, None),
        ("llama3.1:8b-instruct-q4_K_M", "llama3.1", 8.0, 8.0, "q4_K_M"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1", 8.0, 8.0, None),
        ("smollm2-135m-instruct-q4_1.gguf", "smollm2", 0.135, 0.135, "q4_1"),
        ("deepseek-r1:1.5b", "deepseek-r1", 1.5, 1.5, None),
        ("phi3:mini", "phi3", 3.8, 3.8, None),
        ("nomic-embed-text", "nomic-embed-text", None, None, None),
    ],
)
def test_parse_model_name_reads_size_moe_and_quant(name, family, total, active, quant):
    info = parse_model_name(name)
    assert (info.family, info.params_b, info.active_params_b, info.quant) == (family, total, active, quant)


def test_moe_models_report_moe_and_dense_do_not():
    assert parse_model_name("qwen3:30b-a3b").is_moe
    assert not parse_model_name("llama3.1:8b").is_moe


def test_roles_come_from_the_name():
    assert parse_model_name("nomic-embed-text:latest").embedding
    assert parse_model_name("llava:7b").vision
    assert parse_model_name("qwen2.5-coder:7b").coder
    assert parse_model_name("llama3.1:8b-instruct-q4_K_M").instruct
