"""StopMatcher: stop strings found across chunk boundaries, held-back prefixes, flush."""

from __future__ import annotations

import random

import pytest

from core.engine.stop import StopMatcher, StopResult


def run(stops: list[str], chunks: list[str]) -> tuple[list[str], str | None, str]:
    """Feed every chunk (until a match); return the emitted pieces, the match and the flush."""
    matcher = StopMatcher(stops)
    emitted: list[str] = []
    matched: str | None = None
    for chunk in chunks:
        result = matcher.feed(chunk)
        emitted.append(result.emit)
        if result.matched is not None:
            matched = result.matched
            break
    return emitted, matched, matcher.flush()


CASES = [
    # (id, stops, chunks, emitted per feed, matched, flushed)
    ("inside-one-chunk", ["STOP"], ["abcSTOPdef"], ["abc"], "STOP", ""),
    ("spans-two-chunks", ["STOP"], ["abcST", "OPdef"], ["abc", ""], "STOP", ""),
    ("near-miss-three-chunks", ["STOP"], ["xS", "T", "Oy", "P"], ["x", "", "STOy", "P"], None, ""),
    ("spans-three-chunks-match", ["STOP"], ["xS", "TO", "P!"], ["x", "", ""], "STOP", ""),
    ("prefix-then-divergence", ["</end>"], ["a</e", "nx b"], ["a", "</enx b"], None, ""),
    ("prefix-held-to-flush", ["</end>"], ["a</", "en"], ["a", ""], None, "</en"),
    ("stop-at-very-start", ["Hi"], ["Hi there"], [""], "Hi", ""),
    ("stop-is-whole-chunk", ["\n\n"], ["a", "\n\n", "b"], ["a", ""], "\n\n", ""),
    ("earliest-of-several", ["bar", "foo"], ["xx foo yy bar"], ["xx "], "foo", ""),
    ("earliest-across-chunks", ["bar", "foo"], ["xx fo", "o bar"], ["xx ", ""], "foo", ""),
    ("overlapping-ab-abc", ["abc", "ab"], ["xab", "c"], ["x"], "ab", ""),
    ("overlapping-abc-only", ["abc", "abd"], ["xab", "c"], ["x", ""], "abc", ""),
    ("overlapping-diverge", ["abc", "abd"], ["xab", "e"], ["x", "abe"], None, ""),
    # The occurrence completed first wins, as a character-by-character stream would see.
    ("completes-first-wins", ["abcd", "bc"], ["xabcd"], ["xa"], "bc", ""),
    ("same-end-longest", ["cd", "bcd"], ["abcd"], ["a"], "bcd", ""),
    ("repeated-prefix-char", ["aab"], ["xaa", "aab"], ["x", "aa"], "aab", ""),
    ("unicode", ["Ωμέγα"], ["αβγ Ωμ", "έγα δ"], ["αβγ ", ""], "Ωμέγα", ""),
    ("unicode-emoji", ["🛑"], ["go 🚦", "then 🛑 no"], ["go 🚦", "then "], "🛑", ""),
    ("regex-specials", ["]^-\\", ".*"], ["a]^", "-\\b"], ["a", ""], "]^-\\", ""),
    ("no-stops", [], ["any ", "text STOP"], ["any ", "text STOP"], None, ""),
    ("empty-chunks", ["END"], ["", "E", "", "ND"], ["", "", "", ""], "END", ""),
    ("no-match-flush-empty", ["END"], ["hello ", "world"], ["hello ", "world"], None, ""),
]


@pytest.mark.parametrize(
    ("stops", "chunks", "emitted", "matched", "flushed"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_stop_matching(
    stops: list[str],
    chunks: list[str],
    emitted: list[str],
    matched: str | None,
    flushed: str,
) -> None:
    assert run(stops, chunks) == (emitted, matched, flushed)


def test_nothing_after_match_is_emitted() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("aSTOPb") == StopResult("a", "STOP")
    assert matcher.feed("more text") == StopResult("", "STOP")
    assert matcher.matched == "STOP"
    assert matcher.flush() == ""


def test_no_stops_returns_input_at_once() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("ab") == StopResult("ab", None)
    assert matcher.matched is None
    assert matcher.flush() == ""


def test_flush_releases_held_text_once() -> None:
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.feed("answer <|im") == StopResult("answer ", None)
    assert matcher.flush() == "<|im"
    assert matcher.flush() == ""


def test_held_text_is_bounded_by_longest_stop() -> None:
    matcher = StopMatcher(["abc"])
    assert matcher.feed("a" * 1000 + "ab").emit == "a" * 1000
    assert matcher.flush() == "ab"


def test_empty_stop_string_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        StopMatcher(["ok", ""])


def reference(stops: list[str], text: str) -> tuple[str, str | None]:
    """The answer on the whole text: the occurrence that ends first, then starts first."""
    hits = [(text.find(s) + len(s), text.find(s), s) for s in stops if s in text]
    if not hits:
        return text, None
    _end, start, stop = min(hits)
    return text[:start], stop


@pytest.mark.parametrize("seed", range(40))
def test_result_does_not_depend_on_chunking(seed: int) -> None:
    rng = random.Random(seed)
    stops = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 4))) for _ in range(3)]
    text = "".join(rng.choice("abcd") for _ in range(30))
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 10)))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    emitted, matched, flushed = run(stops, chunks)
    assert ("".join(emitted) + flushed, matched) == reference(stops, text)
