"""The simulated models' skill: right answers by size and category, from the profiling suite's answer book."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout.fakefleet import text
from turnout.fakefleet.config import ModelSpec
from turnout.fakefleet.skill import AnswerBook, p_correct, profiler_suite, size_score

SMALL = ModelSpec(name="llama3.2:1b", params="1.2B")
CODER = ModelSpec(name="qwen2.5-coder:7b", params="7.6B", capabilities=["completion", "insert"])
BIG = ModelSpec(name="qwen3:30b", params="30.5B")


def test_chances_grow_with_size_and_fall_with_difficulty() -> None:
    assert [round(size_score(m.params), 3) for m in (SMALL, CODER, BIG)] == [0.211, 0.654, 0.988]
    assert [round(p_correct(SMALL, c), 3) for c in ("general", "math", "code")] == [0.933, 0.213, 0.153]
    assert [round(p_correct(CODER, c), 3) for c in ("general", "math", "code")] == [0.97, 0.845, 0.97]
    assert p_correct(BIG, "code") == 0.97 and p_correct(BIG, "general") == 0.97
    assert p_correct(ModelSpec(name="x", params="100M"), "code") == 0.03
    assert p_correct(ModelSpec(name="x", skills={"code": 0.25}), "code") == 0.25
    llava = ModelSpec(name="llava:7b", params="7B", capabilities=["completion", "vision"])
    assert round(p_correct(llava, "general"), 2) == 0.52  # vision models are weaker at text


BOOK = {
    "prompts": [
        {"id": f"c{i}", "category": "code", "prompt": f"Write  function\\n f{i}.", "reference": f"def f{i}(): ...\n"}
        for i in range(4)
    ]
    + [{"id": "g", "category": "general", "prompt": "Name three colors.", "reference": "Red, green\n and blue."}]
}


def test_a_stronger_model_answers_every_prompt_a_weaker_one_does() -> None:
    book = AnswerBook.from_suite(BOOK)
    prompts = [p["prompt"] for p in BOOK["prompts"] if p["category"] == "code"]
    right = {m.name: {p for p in prompts if book.answer(m, p) is not None} for m in (SMALL, CODER)}
    assert len(right[SMALL.name]) == 1 and len(right[CODER.name]) == 4  # 0.153 and 0.97 of 4 prompts
    assert right[SMALL.name] <= right[CODER.name]
    assert book.answer(SMALL, "not in the book") is None


def test_a_known_answer_is_the_reference_token_by_token_and_whitespace_is_kept() -> None:
    book = AnswerBook.from_suite(BOOK)
    out = text.reply(SMALL, "Name   three colors.", book=book)  # whitespace differences do not matter
    assert (out.text, out.tokens, out.finish_reason) == (
        "Red, green\n and blue.",
        ("Red,", " green", "\n and", " blue."),
        "stop",
    )
    cut = text.reply(SMALL, "Name three colors.", book=book, max_tokens=2)
    assert (cut.text, cut.finish_reason) == ("Red, green", "length")
    wrong = text.reply(SMALL, BOOK["prompts"][0]["prompt"], book=book)  # not known: the canned reply
    assert wrong.text == text.reply(SMALL, BOOK["prompts"][0]["prompt"]).text


def test_the_profiler_suite_is_found_without_importing_the_profiler() -> None:
    import sys

    loaded_before = "turnout.profiler" in sys.modules
    path = profiler_suite()
    assert path is not None and path.name == "suite.yaml" and path.parent.name == "suite"
    assert ("turnout.profiler" in sys.modules) == loaded_before
    book = AnswerBook.load("auto")
    assert book is not None and len(book) == 32
    assert AnswerBook.load(None) is None


def test_an_explicit_answer_book_that_cannot_be_read_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AnswerBook.load(str(tmp_path / "missing.yaml"))
