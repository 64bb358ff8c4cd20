"""BoundaryDetector on a fake token table (pure Python: no torch, no tokenizer)."""

import pytest

from specexit.boundaries import DEFAULT_CONNECTORS, Boundary, BoundaryDetector

TEXTS = [
    "<think>",
    "</think>",
    "Hello",
    " world",
    "A",
    "B",
    "x",
    ".",
    "\n",
    "\n\n",
    "\n\n\n",
    ".\n\n",
    ".\n\n\n",
    " \n\n",
    " \n\n\n",
    "\n \n",
    "\n\t\n",
    ".\n",
    "Hello\n",
    " ",
    "  ",
    "Wait",
    " Wait",
    "But",
    " But",
    "So",
    " So",
    "Wait,",
    "Waiting",
    "wait",
    "Hmm",
    "\r\n",
    ".\r\n\r\n",
]
VOCAB = dict(enumerate(TEXTS))
ID = {t: i for i, t in VOCAB.items()}

REFERENCE_BOUNDARIES = ["\n\n", "\n\n\n", ".\n\n", ".\n\n\n", " \n\n", " \n\n\n"]
CONNECTORS = ("Wait", "But", "So")


def ids(*texts: str) -> list[int]:
    return [ID[t] for t in texts]


def detector(paragraph: bool = True, connectors=()) -> BoundaryDetector:
    return BoundaryDetector(VOCAB.__getitem__, paragraph=paragraph, connectors=connectors)


def para(index: int, text: str) -> Boundary:
    return Boundary(index=index, keep=index + 1, kind="paragraph", text=text)


def conn(index: int, text: str) -> Boundary:
    return Boundary(index=index, keep=index, kind="connector", text=text)


# ---------------------------------------------------------------------------------------------
# paragraph boundaries


@pytest.mark.parametrize("tok", REFERENCE_BOUNDARIES)
def test_reference_single_token_boundaries(tok):
    d = detector()
    assert d.scan(ids("Hello", " world", tok, "A")) == [para(2, tok)]


@pytest.mark.parametrize("tok", REFERENCE_BOUNDARIES)
def test_reference_boundary_as_first_token(tok):
    d = detector()
    assert d.scan(ids(tok)) == [Boundary(index=0, keep=1, kind="paragraph", text=tok)]


@pytest.mark.parametrize("tok", REFERENCE_BOUNDARIES)
def test_push_reports_kind_and_text(tok):
    d = detector()
    assert d.push(ID["Hello"]) is None
    assert d.push(ID[tok]) == ("paragraph", tok)
    assert d.push(ID["A"]) is None


def test_newlines_split_over_two_tokens():
    d = detector()
    # the first "\n" is not a boundary, the second completes the blank line; keep includes both
    assert d.scan(ids("Hello", "\n", "\n", "A")) == [para(2, "\n")]


def test_split_newlines_with_spaces_between():
    d = detector()
    assert d.scan(ids("Hello", "\n", " ", "\n", "A")) == [para(3, "\n")]
    d = detector()
    assert d.scan(ids("Hello", ".\n", "  ", "\n")) == [para(3, "\n")]


@pytest.mark.parametrize("tok", ["\n \n", "\n\t\n"])
def test_whitespace_line_inside_one_token(tok):
    assert detector().scan(ids("Hello", tok)) == [para(1, tok)]


@pytest.mark.parametrize("seq", [["Hello", "\n", "A"], ["Hello\n", "A"], ["x", ".\n", "B"], ["\n", "A", "\n", "B"]])
def test_single_newline_is_not_a_boundary(seq):
    assert detector().scan(ids(*seq)) == []


def test_whitespace_after_break_is_not_another_boundary():
    # " " has no newline: only the token that completes the blank line counts
    assert detector().scan(ids("Hello", "\n\n", " ", "  ", "A")) == [para(1, "\n\n")]


def test_every_completed_blank_line_is_reported():
    # "\n\n" followed by "\n" completes a second blank line
    assert detector().scan(ids("Hello", "\n\n", "\n", "A")) == [para(1, "\n\n"), para(2, "\n")]


def test_tail_carries_across_scans():
    d = detector()
    assert d.scan(ids("Hello", "\n")) == []
    assert d.scan(ids("\n", "A")) == [para(0, "\n")]  # indices are relative to the batch
    assert d.scan(ids("B", "\n")) == []
    assert d.scan(ids(" ", "\n")) == [para(1, "\n")]


def test_reset_context_and_clear():
    d = detector()
    d.reset("Question?\n")
    assert d.scan(ids("\n")) == [para(0, "\n")]
    d.scan(ids("Hello", "\n"))
    d.reset()  # new sequence: the pending "\n" is forgotten
    assert d.scan(ids("\n", "A")) == []
    d.reset("x" * 100 + "\n \n")  # only the end of a long context matters
    assert d.scan(ids(" But")) == []  # no connectors configured
    d = detector(connectors=CONNECTORS)
    d.reset("x" * 100 + "\n \n")
    assert d.scan(ids(" But")) == [conn(0, " But")]


def test_paragraph_disabled_and_no_connectors_finds_nothing():
    d = detector(paragraph=False)
    assert d.scan(ids("Hello", *REFERENCE_BOUNDARIES, "\n", "\n", "But")) == []


# ---------------------------------------------------------------------------------------------
# connector boundaries


@pytest.mark.parametrize("word", ["Wait", " Wait", "But", " But", "So", " So"])
def test_connector_at_paragraph_start(word):
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", "\n\n", word, "A")) == [conn(2, word)]


@pytest.mark.parametrize("word", ["Wait", " But", "So"])
def test_connector_mid_paragraph_is_not_a_boundary(word):
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", word, "A", ".", word)) == []
    # after a single newline: a new line, not a new paragraph
    assert d.scan(ids("Hello", "\n", word)) == []


def test_connector_at_very_start_without_blank_line_is_not_a_boundary():
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Wait", "A")) == []


@pytest.mark.parametrize("brk", [*REFERENCE_BOUNDARIES, "\n \n"])
def test_connector_after_every_kind_of_break(brk):
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", brk, " So")) == [conn(2, " So")]


def test_connector_after_split_newlines_and_trailing_space():
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", "\n", "\n", " ", "But")) == [conn(4, "But")]


def test_connector_cut_before_paragraph_cut_after():
    d = detector(connectors=CONNECTORS)
    found = d.scan(ids("Hello", "\n\n", "Wait", "A"))
    assert found == [para(1, "\n\n"), conn(2, "Wait")]
    assert [b.keep for b in found] == [2, 2]  # both cuts keep exactly "Hello\n\n"


def test_connector_only_the_first_word_of_a_paragraph():
    d = detector(paragraph=False, connectors=CONNECTORS)
    # "So" right after "Wait" is no longer at a paragraph start
    assert d.scan(ids("\n\n", "Wait", "So", "B")) == [conn(1, "Wait")]


@pytest.mark.parametrize("word", ["Wait,", "Waiting", "wait", "Hmm"])
def test_connector_must_match_a_configured_word(word):
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", "\n\n", word)) == []


def test_connector_across_scans():
    d = detector(paragraph=False, connectors=CONNECTORS)
    assert d.scan(ids("Hello", "\n\n")) == []
    assert d.scan(ids(" But", "A")) == [conn(0, " But")]  # keep 0: cut before the round's first token


def test_connector_words_are_stripped_and_blank_ones_dropped():
    d = detector(paragraph=False, connectors=(" But ", "", "  ", "So\n"))
    assert d.connectors == frozenset({"But", "So"})
    assert d.scan(ids("\n\n", "But")) == [conn(1, "But")]


def test_paragraph_enabled_with_connectors_reports_both_kinds_in_order():
    d = detector(connectors=CONNECTORS)
    found = d.scan(ids("A", ".\n\n", "So", "B", " \n\n", " But", "x", "But"))
    assert found == [para(1, ".\n\n"), conn(2, "So"), para(4, " \n\n"), conn(5, " But")]


def test_default_connectors_include_paper_words():
    assert {"But", "So", "Wait"} <= set(DEFAULT_CONNECTORS)
    d = detector(paragraph=False, connectors=DEFAULT_CONNECTORS)
    assert d.scan(ids("\n\n", "Hmm")) == [conn(1, "Hmm")]


# ---------------------------------------------------------------------------------------------
# token text


def test_token_text_is_memoised():
    calls: list[int] = []

    def text(i: int) -> str:
        calls.append(i)
        return VOCAB[i]

    d = BoundaryDetector(text)
    d.scan(ids("Hello", "\n", "\n", "Hello", "\n\n", "\n"))
    assert sorted(calls) == sorted(ids("Hello", "\n", "\n\n"))
    assert d.text(ID["Hello"]) == "Hello"
    assert len(calls) == 3


def test_special_token_text_is_plain_text():
    # a decoded special token is just text: it breaks a blank line like any other non-space text
    d = detector()
    assert d.scan(ids("\n", "</think>", "\n")) == []


def test_crlf_blank_lines_are_paragraph_breaks():
    d = detector()
    assert d.scan(ids("A", ".\r\n\r\n")) == [para(1, ".\r\n\r\n")]
    assert d.scan(ids("B", "\r\n", "\r\n")) == [para(2, "\r\n")]
    assert d.scan(ids("x", "\r\n", "B")) == []
