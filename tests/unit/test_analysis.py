import pytest

from turnout.common.schemas.route import PromptAnalysisV1, RequestKind, RouteRequestV1
from turnout.scorer.prompt_analysis import (
    CORE_CATEGORIES,
    AnalysisConfig,
    Analyzer,
    PromptFeatures,
    analyze_features,
    level_of,
)

CFG = AnalysisConfig()


def analyze(text: str, **kw: object):
    return analyze_features(PromptFeatures(text, **kw), CFG)  # type: ignore[arg-type]


def reason_with(a, prefix: str) -> str:
    hits = [r for r in a.reasons if r.startswith(prefix)]
    assert hits, a.reasons
    return hits[0]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Fix this Python function:\n```python\ndef f(x):\n    return x +\n```", "coding"),
        ("Solve the equation 3x + 5 = 20 for x", "reasoning"),
        ("Prove that the sum of two even numbers is even, step by step.", "reasoning"),
        ("Write a short poem about the autumn rain", "creative"),
        ("Summarize the key points of the following article: the council met on Monday ...", "summarisation"),
        ("Translate into French: where is the train station?", "translation"),
        ("Tell me about the history of Lisbon", "general"),
        ("hi", "general"),
    ],
)
def test_category_follows_keyword_and_structure_cues(text, category):
    a = analyze(text)
    assert a.category == category
    assert a.reasons[0].startswith(f"category {category}")


def test_every_core_category_is_reachable():
    assert set(CORE_CATEGORIES) == {"coding", "reasoning", "creative", "summarisation", "translation", "general"}


def test_extra_categories_come_from_config():
    cfg = AnalysisConfig(extra_categories={"legal": ("contract", "liability", "governing law")})
    a = Analyzer(cfg).analyze(PromptFeatures("Review the liability clause and governing law of this contract"))
    assert a.category == "legal"
    assert "legal" in cfg.categories
    assert "contract" in a.reasons[0] and "governing law" in a.reasons[0]


def test_short_greeting_is_capped_simple():
    a = analyze("hello there!")
    assert a.complexity == 0.05
    assert a.level == "simple"
    assert any(r.startswith("short greeting") for r in a.reasons)


def test_length_raises_complexity_and_is_reported():
    short, long = analyze("Tell me about rivers."), analyze("Tell me about rivers. " * 300)
    assert long.complexity > short.complexity
    assert reason_with(long, "~").startswith("~1650 tokens")


def test_conversation_depth_adds_up_to_a_cap():
    base = analyze("Tell me more about that.").complexity
    deep = analyze("Tell me more about that.", n_messages=12)
    assert deep.complexity == pytest.approx(base + 0.10)
    assert reason_with(deep, "12 messages") == "12 messages (+0.10)"


def test_system_prompt_length_adds():
    a = analyze("Tell me about rivers.", system_chars=9000)
    b = analyze("Tell me about rivers.", system_chars=3000)
    assert reason_with(a, "system prompt") == "system prompt 9000 chars (+0.10)"
    assert reason_with(b, "system prompt") == "system prompt 3000 chars (+0.05)"


def test_code_block_and_code_lines():
    block = analyze("Why does this fail?\n```\nx = 1\n```")
    lines = analyze("Why does this fail?\nimport os\ndef f():\n    return os.getcwd()\nclass A:\n  pass")
    assert reason_with(block, "code block") == "code block (+0.15)"
    assert reason_with(lines, "code-looking lines") == "code-looking lines (+0.10)"
    assert block.category == lines.category == "coding"


@pytest.mark.parametrize(
    ("flag", "reason"),
    [("has_tools", "tools (+0.10)"), ("has_images", "images (+0.05)"), ("json_mode", "JSON mode (+0.05)")],
)
def test_request_features_add_complexity(flag, reason):
    plain = analyze("Describe the weather in Paris")
    flagged = analyze("Describe the weather in Paris", **{flag: True})
    assert reason in flagged.reasons
    assert flagged.complexity > plain.complexity


@pytest.mark.parametrize("cue", ["step by step", "prove", "trade-offs", "implement", "thread-safe", "optimize"])
def test_hard_cues_raise_complexity(cue):
    plain = analyze("Tell me about databases")
    cued = analyze(f"Tell me about databases, {cue}")
    assert cued.complexity > plain.complexity
    assert any(r.startswith("cues ") for r in cued.reasons)


@pytest.mark.parametrize(
    "text", ["What is a database?", "Is Paris in France? yes or no", "Define entropy", "Name a colour in one word"]
)
def test_easy_cues_lower_complexity(text):
    a = analyze(text)
    assert any(r.startswith("easy cues") for r in a.reasons)
    assert a.level == "simple"


def test_hard_coding_request_is_hard():
    a = analyze("implement a thread-safe LRU cache in Rust with tests")
    assert (a.category, a.level) == ("coding", "hard")
    assert "cues 'implement', 'concurrency', 'with tests' (+0.42)" in a.reasons


def test_levels_follow_thresholds():
    assert [level_of(c, CFG) for c in (0.0, 0.32, 0.33, 0.65, 0.66, 1.0)] == [
        "simple",
        "simple",
        "medium",
        "medium",
        "hard",
        "hard",
    ]


def test_complexity_is_bounded():
    huge = "Prove, step by step, the trade-offs of this distributed algorithm design; implement it with tests. " * 400
    a = analyze(huge, n_messages=40, system_chars=20000, has_tools=True, has_images=True, json_mode=True)
    assert 0.0 <= a.complexity <= 1.0
    assert a.level == "hard"


def test_embedding_requests_are_not_analysed():
    a = analyze("some text to embed", kind=RequestKind.EMBEDDING.value)
    assert (a.category, a.complexity, a.reasons) == ("general", 0.0, ("embedding request",))


def test_confidence_is_low_near_a_threshold_or_between_categories():
    assert analyze("hi").confidence == 1.0
    assert analyze("implement a thread-safe LRU cache in Rust with tests").confidence < 0.5


def test_cache_returns_the_same_analysis_and_is_bounded():
    an = Analyzer(AnalysisConfig(cache_size=2))
    first = an.analyze(PromptFeatures("hello"))
    assert an.analyze(PromptFeatures("hello")) is first
    assert (an.hits, an.misses) == (1, 1)
    an.analyze(PromptFeatures("a"))
    an.analyze(PromptFeatures("b"))
    assert an.analyze(PromptFeatures("hello")) is not first  # evicted
    # the features, not only the text, key the cache
    assert an.analyze(PromptFeatures("b", has_tools=True)).complexity > an.analyze(PromptFeatures("b")).complexity


def test_request_analysis_is_wire_compatible():
    req = RouteRequestV1(text="Write a haiku about the sea", n_messages=3)
    a = Analyzer().analyze_request(req)
    wire = a.to_wire()
    assert isinstance(wire, PromptAnalysisV1)
    assert (wire.category, wire.level, wire.signals) == ("creative", a.level, list(a.reasons))


def test_estimated_tokens_win_over_the_text_length():
    assert analyze("short", est_tokens=5000).tokens == 5000
    assert analyze("x" * 400).tokens == 100


def test_the_early_exit_counts_agree_with_counting_every_match():
    """``_several_items`` (a literal-prefixed pre-scan, then at most three matches) and
    ``_at_least`` say what ``len(findall(...)) >= 3`` says, on texts made of the awkward parts:
    blank and indented lines, Unicode spaces and digits, bullets with nothing after them."""
    import random

    from turnout.scorer import prompt_analysis as pa

    parts = ["\n", "\n\n", " ", "\t", "\u2003", "1.", "2)", "10.", "\u0663.", "-", "*", "•", "x", "def ", "{", ";", "?"]
    rng = random.Random(7)
    texts = ["", "\n", "1. a\n2. b\n3. c", " - a\n\n - b\n\t* c", "1.\nfoo\n2.\nbar\n3.\nbaz"]
    texts += ["".join(rng.choice(parts) for _ in range(rng.randint(1, 90))) for _ in range(5000)]
    seen = {True: 0, False: 0}
    for t in texts:
        items = len(pa._NUMBERED.findall(t)) >= 3
        assert pa._several_items(t) is items, repr(t)
        assert pa._at_least(pa._CODE_LINE, t, 3) is (len(pa._CODE_LINE.findall(t)) >= 3), repr(t)
        seen[items] += 1
    assert min(seen.values()) > 50, seen  # both answers were exercised


def test_hard_cues_are_named_in_table_order_whatever_matched_them():
    a = analyze("debug the root cause, then optimize it step by step and prove it")
    cues = reason_with(a, "cues ")
    assert cues.startswith("cues 'step by step', 'prove', 'optimise', 'debug'"), cues
