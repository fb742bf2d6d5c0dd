"""The static embedder's word-cached path (the scorer's request path) gives the ids and the
vector that tokenising the whole text gives."""

from __future__ import annotations

import numpy as np
import pytest

from turnout.embeddings.static import default_embedder

TEXTS = [
    "Héllo, wörld! Ça va?",
    "def f(x):\n\treturn x**2  # squares",
    "日本語のテキストとEnglish mixed",
    "URL: https://example.com/a?b=c&d=e",
    "naïve café résumé — “quoted” text…",
    'C++/Rust: fn main() { println!("{}", 1); }',
    "fn f() { let x = 1; }\n" * 100,  # past max_tokens: the ordered path
    "word " * 600,
    "",
    "   \n\t ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_word_cached_ids_and_vector_equal_the_whole_text_path(text: str) -> None:
    e = default_embedder()
    assert e.token_ids(text) == e._tok.encode(text, add_special_tokens=False).ids[: e.max_tokens]
    np.testing.assert_allclose(e.encode_one(text), e.encode([text])[0], atol=1e-6)


def test_the_word_cache_is_bounded() -> None:
    e = default_embedder()
    size = e.word_cache_size
    try:
        e.word_cache_size = 3
        e.encode_one("one two three four five")
        assert len(e._word_ids) <= 3
        assert e.token_ids("one two three four five") == e._tok.encode("one two three four five").ids[1:-1]
    finally:
        e.word_cache_size = size
