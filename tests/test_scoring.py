"""Answer extraction, normalization and equivalence (pure Python: no torch, no model)."""

import sys

import pytest

from specexit.scoring import answers_equal, extract_answer, math_verify_available, normalize_answer, score

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)


# ---------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # boxes: balanced and nested braces, the last one wins, \boxed 5, \fbox
        (r"So the result is $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"First \boxed{3}, but wait, it is \boxed{5}.", "5"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"The answer is \boxed 5$.", "5"),
        (r"\fbox{7} done", "7"),
        (r"\boxed{3, 4}", "3, 4"),
        (r"\boxed{-3}", "-3"),
        (r"Earlier \boxed{4}. Final: \boxed{9} and a truncated \boxed{1", "9"),
        (r"\boxed{} then \boxed{8}", "8"),
        # a box beats a later #### and a later number
        ("\\boxed{10}\n#### 11\nthen 12", "10"),
        # GSM8K ####: the last one, thousands kept for normalize_answer
        ("so 3 + 4 = 7\n#### 1,234", "1,234"),
        ("#### 5\nwait\n#### 6", "6"),
        ("#### Step 1\nWe have 7 apples.", "7"),  # a Markdown heading is not an answer
        # answer phrases
        ("Therefore, the answer is 42.", "42"),
        ("The answer is 18, since she sold 3 more.", "18"),
        ("**Final Answer:** 42", "42"),
        ("The answer is **17**.", "17"),
        (r"The final answer is $\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("Answer: -7\n", "-7"),
        ("The answer is $18, which is $3 more than before.", "$18"),  # money, not a $...$ math span
        ("The answer is $x+1$ for all x.", "x+1"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is yes.", "yes"),
        ("Answer: (B)", "(B)"),
        ("The answer is 5. Next, I check 6 and 7.", "5"),
        ("I will find the answer: first, add 2 and 3 to get 5", "5"),  # "first" is no answer -> last number
        # last number in the text
        ("She has 3 apples and buys 4, so 7 in total.", "7"),
        ("It costs $1,000.", "1,000"),
        ("we get 3-5 = -2.", "-2"),
        ("so x = .5", ".5"),
        ("the ratio is 3/4", "3/4"),
        (r"the ratio is \frac{3}{4}", r"\frac{3}{4}"),
        # the thinking span is scratch work: only the text after the last </think> counts
        (r"<think>maybe \boxed{3}</think>The answer is \boxed{4}.", "4"),
        ("<think>it is 5</think>\n\nSo we get 6 apples.", "6"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "I do not know how to solve this.", "<think>it is 5, I think</think>", "<think>12</think>   \n", r"\boxed{}"],
)
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_extract_gsm8k_solution():
    assert extract_answer(GSM8K_SOLUTION) == "72"


# ------------------------------------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,234", "1234"),
        ("1,234,567.50", "1234567.5"),
        (r"1\,234", "1234"),
        ("10{,}000", "10000"),
        ("$18.00", "18"),
        (r"\$18", "18"),
        ("18 dollars", "18"),
        (r"18 \text{ dollars}", "18"),
        ("5 cm", "5"),
        ("5cm", "5"),
        ("3 hrs.", "3"),
        ("60 km/h", "60"),
        ("50%", "50"),
        (r"50\%", "50"),
        ("50 percent", "50"),
        (r"30^\circ", "30"),
        (r"30^{\circ}", "30"),
        ("18.0", "18"),
        ("18.", "18"),
        ("-3", "-3"),
        ("+3", "3"),
        ("\u22123", "-3"),  # Unicode minus
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("1/2", "0.5"),
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac12", "0.5"),
        (r"\tfrac{1}{2}", "0.5"),
        (r"-\frac{1}{2}", "-0.5"),
        (r"\frac{-1}{2}", "-0.5"),
        ("1/3", "1/3"),
        (r"\frac{2}{6}", "1/3"),
        ("-2/6", "-1/3"),
        (r"1.5\times10^{3}", "1500"),
        (r"\boxed{42}", "42"),
        (r"$\boxed{\dfrac{3}{4}}$", "0.75"),
        (r"\text{18}", "18"),
        (r"\mathrm{even}", "even"),
        ("Yes", "yes"),
        ("x = 5", "5"),
        (r"\theta = 30^\circ", "30"),
        ("x + 1", "x+1"),
        ("2x", "2x"),  # a glued variable is not a unit
        ("2 pi", "2pi"),  # nor is pi
        (r"2 \pi", r"2\pi"),
        (r"\sqrt2/2", r"\sqrt{2}/2"),
        (r"x\,+\!1", "x+1"),
        ("(1, 2)", "(1,2)"),
        ("[1, 2)", "[1,2)"),
        (r"\left( 1, \frac12 \right)", "(1,0.5)"),
        ("3, 4", "3,4"),
        ("(1,234)", "(1,234)"),  # a tuple, not a thousands separator
        ("x = 1, y = 2", "x=1,y=2"),  # several '=': no prefix stripping
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# --------------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1,234", "1234"),
        ("$1,234", "1234"),
        ("18 dollars", "18"),
        ("$18.00", "18"),
        (r"\$18", "18.0"),
        ("5 cm", "5"),
        ("18.0", "18"),
        ("1/2", r"\frac{1}{2}"),
        (r"\dfrac12", "0.5"),
        (r"\frac{1}{2}", "0.5"),
        ("2/4", "1/2"),
        ("-3", r"-\frac{6}{2}"),
        ("-0.5", r"\frac{-1}{2}"),
        ("50%", "50"),  # percent sign dropped
        (r"50\%", "0.5"),  # ... or the value over 100 when only one side has it
        ("12.5%", "0.125"),
        (r"\text{5}", "5"),
        ("x+1", "x + 1"),
        (r"x\,+\,1", "x+1"),
        (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt3}{2}"),
        ("(1, 2)", "(1,2)"),
        ("[0, \\infty)", "[0,\\infty)"),
        ("(0.5, 2)", r"(\frac{1}{2}, 2)"),
        ("3, 4", "3,4"),
        ("Yes", "yes"),
        ("x = 5", "5"),
        ("0.333", "1/3"),  # a rounded decimal of a non-terminating value
        ("0.6667", r"\frac{2}{3}"),
        ("0.6666", r"\frac{2}{3}"),  # truncated, within one unit of the last place
        ("0.3", "3/10"),  # exact rationals: no binary-float noise
        ("1.1", r"\frac{11}{10}"),
        ("0.30000", "0.3"),
    ],
)
def test_answers_equal(a, b):
    assert answers_equal(a, b)
    assert answers_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("12", "1.2"),
        ("1/2", "2"),
        ("1/2", "1/3"),
        ("-3", "3"),
        ("18", "180"),
        ("1,234", "1.234"),
        ("0.33", "1/3"),  # too few digits to be a rounding
        ("0.3334", "0.3333"),  # two decimals compare exactly
        ("0.5001", "0.5"),  # tolerance never applies to a terminating value ...
        ("0.1235", "0.12345"),  # ... even within one unit of the last place
        ("3.1416", "3.14159"),
        ("1.0001", "1"),
        ("0.335", "1/3"),  # more than one unit in the last place away
        ("50%", "5"),
        ("2x", "2"),
        ("2 pi", "2"),
        (r"2\sqrt{2}", "2"),
        ("3, 4", "4, 3"),  # order matters
        ("3, 4", "34"),
        ("(1, 2)", "[1, 2)"),
        ("(1,234)", "1234"),
        ("x+1", "x-1"),
        ("x+1", "1+x"),  # string rules only: no algebra by default
        ("5 and 6", "5"),
        ("(1, 2)", "(1, 2, 3)"),
    ],
)
def test_answers_not_equal(a, b):
    assert not answers_equal(a, b)
    assert not answers_equal(b, a)


def test_answers_equal_none():
    assert not answers_equal(None, "5")
    assert not answers_equal("5", None)
    assert not answers_equal(None, None)


def test_normalized_equal_implies_equal():
    pairs = [("1,234", "1234 apples"), (r"\frac{3}{6}", "0.50"), ("(1, 2)", r"\left(1,2\right)")]
    for a, b in pairs:
        assert normalize_answer(a) == normalize_answer(b)
        assert answers_equal(a, b)


# --------------------------------------------------------------------------------------------------- score


def test_score_gsm8k_gold_solution():
    out = "She sold 24 in May, so 48 + 24 = 72.\n#### 72"
    assert score(out, GSM8K_SOLUTION) == {"pred": "72", "gold": "72", "correct": True, "extracted": True}
    # the intermediate numbers of the gold solution (48, 24) are not the gold answer
    wrong = score("The answer is 24.", GSM8K_SOLUTION)
    assert wrong == {"pred": "24", "gold": "72", "correct": False, "extracted": True}


def test_score_bare_and_boxed_gold():
    assert score(r"Thus $\boxed{\dfrac{1}{2}}$.", r"\frac{1}{2}")["correct"]
    assert score(r"Thus $\boxed{0.5}$.", "1/2")["correct"]
    assert score("The answer is 1,234 dollars.", "1234")["correct"]
    assert score(r"\boxed{(1, 2)}", r"Solving gives $\boxed{(1,2)}$.")["gold"] == "(1,2)"
    assert score(r"\boxed{(1, 2)}", r"Solving gives $\boxed{(1,2)}$.")["correct"]
    # a bare gold value is taken whole, not reduced to its last number
    assert score(r"\boxed{x+1}", "x + 1")["correct"]
    assert score("#### 2", r"\frac{1}{2}") == {"pred": "2", "gold": r"\frac{1}{2}", "correct": False, "extracted": True}


def test_score_extraction_failure_is_distinguishable():
    res = score("I cannot solve this problem.", "#### 5")
    assert res == {"pred": None, "gold": "5", "correct": False, "extracted": False}
    wrong = score("It is 6.", "#### 5")
    assert wrong["extracted"] and not wrong["correct"]


def test_score_last_box_counts():
    out = r"First guess \boxed{3}. Wait, recheck: \boxed{4}."
    assert score(out, "4")["correct"]
    assert not score(out, "3")["correct"]


def test_score_answer_after_forced_think_end():
    # labelling a trace: the thinking span mentions the right number, the short answer after </think> does not
    trace = r"<think>48 + 24 = 72, so 72 clips</think>The answer is \boxed{70}."
    assert score(trace, GSM8K_SOLUTION)["pred"] == "70"
    assert not score(trace, GSM8K_SOLUTION)["correct"]
    assert score("<think>48 + 24 = 72</think>", GSM8K_SOLUTION)["extracted"] is False


def test_score_empty_gold_rejected():
    with pytest.raises(ValueError):
        score("5", "   ")


# ------------------------------------------------------------------------------------- optional math-verify


def test_symbolic_without_backend_is_a_safe_superset():
    # whatever is installed, symbolic=True never turns a builtin "equal" into "not equal" ...
    assert answers_equal("1,234", "1234", symbolic=True)
    # ... and keeps clearly different values apart
    assert not answers_equal("12", "1.2", symbolic=True)
    assert not answers_equal("-3", "3", symbolic=True)
    assert not answers_equal(None, "3", symbolic=True)


def test_symbolic_falls_back_without_math_verify(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify -> ImportError
    assert not math_verify_available()
    assert not answers_equal("x+1", "1+x", symbolic=True)
    assert answers_equal(r"\frac{1}{2}", "0.5", symbolic=True)
    assert score(r"\boxed{1,234}", "#### 1234", symbolic=True)["correct"]


@pytest.mark.skipif(not math_verify_available(), reason="math-verify not installed")
def test_symbolic_backend():
    assert not answers_equal("x+1", "1+x")
    assert answers_equal("x+1", "1+x", symbolic=True)
    assert answers_equal(r"2\sqrt{3}", r"\sqrt{12}", symbolic=True)
    assert answers_equal(r"\frac{\pi}{2}", r"\pi/2", symbolic=True)
    assert not answers_equal("(1, 2)", "(2, 1)", symbolic=True)
    assert score(r"\boxed{\sqrt{12}}", r"2\sqrt{3}", symbolic=True)["correct"]
