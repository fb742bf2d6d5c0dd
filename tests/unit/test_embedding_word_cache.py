"""The static embedder's word-cached path (the scorer's request path) gives the ids and the
vector that tokenising the whole text gives."""

from __future__ import annotations

import string

import numpy as np
import pytest

from turnout.embeddings.static import StaticEmbedder, default_embedder

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


def _hf_ids(e: StaticEmbedder, word: str) -> tuple[int, ...]:
    return tuple(e._tok.encode(word, add_special_tokens=False).ids)


def test_the_ascii_wordpiece_gives_the_tokenizers_ids_on_the_whole_vocabulary() -> None:
    e = default_embedder()
    fast = e._ascii
    assert fast is not None  # the shipped tokenizer is the BERT pipeline it reproduces
    checked = 0
    for token in e._tok.get_vocab():
        for word in (token, token.upper(), token.capitalize(), f"{token}!", f"({token}),"):
            got = fast.ids(word)
            if got is not None:
                assert got == _hf_ids(e, word), word
                checked += 1
    assert checked > 100_000


def test_the_ascii_wordpiece_gives_the_tokenizers_ids_on_random_ascii_words() -> None:
    e = default_embedder()
    fast = e._ascii
    assert fast is not None
    rng = np.random.default_rng(17)
    printable = [chr(c) for c in range(33, 127)]
    alnum = list(string.ascii_letters + string.digits)
    fallbacks = 0
    for _ in range(5_000):
        pool = printable if rng.random() < 0.5 else alnum + list("_-.()#[]")
        n = int(rng.choice([1, 2, 3, 5, 8, 13, 30, 99, 100, 101, 150]))
        word = "".join(rng.choice(pool, n))
        got = fast.ids(word)
        if got is None:
            fallbacks += 1
            continue
        want = _hf_ids(e, word)
        assert got[: e.max_tokens] == want, word
    assert fallbacks < 500  # only the words that may hold an added token ([CLS], [MASK] …)
    for word in ("[CLS]", "x[MASK]y", "naïve", "tab\there", "日本"):
        assert fast.ids(word) is None


def test_words_past_max_tokens_are_cut_as_the_tokenizer_cuts_them() -> None:
    e = default_embedder()
    word = "!" * 700
    assert e.token_ids(word) == list(_hf_ids(e, word)) == [999] * e.max_tokens
