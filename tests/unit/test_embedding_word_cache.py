"""The static embedder's word-cached path (the scorer's request path) gives the ids and the
vector that tokenising the whole text gives."""

from __future__ import annotations

import string

import numpy as np
import pytest
from tokenizers import Tokenizer

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


def test_the_short_text_path_gives_the_counted_paths_vector_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts of at most ``SHORT_WORDS`` words skip the word counts: same rows, same order, same
    sum; a text whose ids pass ``max_tokens`` (few long words) still takes the cutting path."""
    from turnout.embeddings import static

    rng = np.random.default_rng(5)
    vocab = ["hi", "there!", "#7", "sort", "the", "list", "Héllo,", "naïve", "x" * 150, "a-b-c", "[CLS]", "日本語"]
    texts = [" ".join(rng.choice(vocab, int(rng.integers(0, 33)))) for _ in range(400)]
    texts += TEXTS[:6] + ["sort sort sort the list", "#0 #0", "Hi there! #123"]
    for max_tokens in (512, 8):  # 8: a few words pass max_tokens
        tok = Tokenizer.from_file(str(static.DEFAULT_TOKENIZER))  # its own: the embedder sets its truncation
        e = StaticEmbedder(default_embedder().matrix, tok, max_tokens=max_tokens)
        short = [e.encode_one(t) for t in texts]
        monkeypatch.setattr(static, "SHORT_WORDS", -1)  # every text through the counted path
        counted = [e.encode_one(t) for t in texts]
        monkeypatch.undo()
        for t, a, b in zip(texts, short, counted, strict=True):
            assert a.tobytes() == b.tobytes(), t
