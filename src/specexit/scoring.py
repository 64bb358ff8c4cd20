"""Answer extraction and answer equivalence for math benchmarks and trace labelling (pure Python, no torch).

Used to label training traces (is the short answer written after a forced ``</think>`` correct?) and by the
benchmark harness to score outputs on GSM8K-style and competition-math data sets.

Public API
----------
``extract_answer(text)``
    The final answer of a model output, or ``None`` when there is none (a failed extraction is never
    confused with a wrong answer).  Only the text after the last ``</think>`` is searched when the output
    contains one: the thinking span is scratch work, and an output that closes it without answering has no
    answer.  Priority, first rule that finds something wins:

    1. the LAST ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` works;
       ``\\{``/``\\}`` are literal; ``\\boxed 5`` works too).  Several boxes: the last complete, non-empty one
       counts (an unclosed box at a truncated end is ignored);
    2. the last ``#### X`` line (GSM8K style); a line whose text starts with a letter (a Markdown
       ``#### Step 2`` heading) is skipped;
    3. the last "answer is X" / "Answer: X" / "final answer = X" phrase whose X holds a digit or LaTeX, or is
       a single choice letter / yes / no / true / false; X is a ``$...$`` / ``\\(...\\)`` span when it starts with
       one, else the rest of the sentence;
    4. the last number in the text (integers, decimals, ``1,234``, ``-5``, ``3/4``, ``\\frac{3}{4}``).

``normalize_answer(ans)``
    A canonical string: numbers become exact rationals written as ``"18"``, ``"-0.25"`` (denominator of
    only 2s and 5s) or ``"1/3"``; anything else has its LaTeX cleaned and all whitespace removed.  Two answers
    with the same normalized string are equal under ``answers_equal``.

``answers_equal(a, b, *, symbolic=False)``
    Equivalence of two extracted answers (``None`` on either side is never equal).  ``b`` is the reference.

``score(output_text, gold, *, symbolic=False)``
    ``{"pred": str | None, "gold": str, "correct": bool, "extracted": bool}``.  ``gold`` may be a GSM8K
    solution ending in ``#### N``, a solution with a box, or a bare value such as ``"\\frac{1}{2}"``.

Rules for the ambiguous cases
-----------------------------
* Wrappers dropped: surrounding ``$``/``\\(``/``\\[``, ``\\$``, ``\\text{}``/``\\mathrm{}``/``\\textbf{}``/
  ``\\mbox{}``, ``\\left``/``\\right``, ``\\displaystyle``, LaTeX spacing (``\\,`` ``\\!`` ``\\;`` ``\\quad``
  ``~``), a trailing period, degrees (``^\\circ``, ``°``), ``{,}``, and a single-variable prefix ``x = `` (only
  when it is the only ``=``; not inside lists, where ``x=1, y=2`` keeps its names).
* Units: a number followed by words is the number ("18 dollars", "5 cm", "3 hrs."); without a space only a
  known unit is dropped ("5cm" is 5, "2x" stays "2x").  Words starting with ``pi``/``and``/``or``/``times``/...
  and single-letter words that are not units ("2 x") are kept.
* Thousands: ``1,234`` / ``1\\,234`` / ``1{,}234`` is 1234 when the whole answer is such a number;
  otherwise a comma separates items ("3, 4" is a list, "(1,234)" a tuple).
* Percent: the sign is dropped, so "50%" == "50" (GSM8K golds omit it).  When exactly one side carries a
  percent sign its value over 100 is also accepted ("50%" == "0.5").  ``normalize_answer("50%")`` is "50".
* Numbers are exact ``Fraction``s: "18.00" == "18", "0.1" is 1/10.  Tolerance is used only when one side is a
  decimal with at least 3 digits after the point and the other side's exact value has no finite decimal
  expansion (e.g. 1/3): they are equal when they differ by less than one unit in the decimal's last place
  ("0.333" and "0.3334" both equal "1/3"; "0.33" does not).  Two decimals, or a decimal and an integer, must be exact.
* Lists, tuples and intervals compare item by item with the same rules when both sides have the same
  brackets and length; order matters ("3, 4" != "4, 3"); "(1, 2)" != "[1, 2)".
* Non-numeric answers compare as whitespace-free strings ("x+1" == "x + 1", "x+1" != "1+x"); purely
  alphabetic ones ignore case ("Yes" == "yes").
* ``symbolic=True`` additionally asks the optional ``math-verify`` package (``pip install math-verify``)
  when the rules above say "not equal" (so ``1+x`` == ``x+1``, ``\\sqrt{12}`` == ``2\\sqrt{3}``).  Without the
  package it is a no-op.  The default is off so labels do not depend on what is installed.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["answers_equal", "extract_answer", "math_verify_available", "normalize_answer", "score"]

THINK_END = "</think>"

# ----------------------------------------------------------------------------------------------------------
# brace helpers


def _group_end(s: str, start: int) -> int | None:
    """Index just past the ``}`` matching the ``{`` at ``s[start]``; ``None`` if it never closes.

    A backslash escapes the next character, so ``\\{`` and ``\\}`` are not structural.
    """
    depth = 0
    i = start
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete, non-empty ``\\boxed``/``\\fbox`` in order of their start."""
    out = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == "{":
            end = _group_end(text, j)
            if end is not None:
                inner = text[j + 1 : end - 1].strip()
                if inner:
                    out.append(inner)
        elif j > m.end():  # "\boxed 5": the argument is the next space-free token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok and tok.group(0).rstrip(".,;"):
                out.append(tok.group(0).rstrip(".,;"))
    return out


def _last_boxed(text: str) -> str | None:
    boxes = _boxed_contents(text)
    return boxes[-1] if boxes else None


# ----------------------------------------------------------------------------------------------------------
# extraction rules

_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")


def _last_hashes(text: str) -> str | None:
    for m in reversed(list(_HASH_RE.finditer(text))):
        cand = m.group(1).strip()
        if cand and not cand[0].isalpha() and cand[0] != "#":
            return cand
    return None


_PHRASE_RE = re.compile(
    r"\banswer\b[ \t]*(?:\*\*)?[ \t]*(?:(?:is|was|would\s+be|should\s+be|will\s+be)\b|[:=])[ \t:*]*",
    re.IGNORECASE,
)
_SPANS = (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$"))
_SENTENCE_END = re.compile(r"\.(?=\s|$)|;|,\s+(?=[A-Za-z]{2})|\*\*")
_WORD_ANSWERS = frozenset({"yes", "no", "true", "false", "none"})


def _phrase_candidate(rest: str) -> str | None:
    rest = rest.lstrip()
    for open_, close in _SPANS:
        if rest.startswith(open_):
            k = rest.find(close, len(open_))
            inner = rest[len(open_) : k] if k > len(open_) else ""
            # "$18, which is $3 more" is money, not a math span: TeX math does not start or end with a space
            if inner.strip() and (open_ != "$" or inner == inner.strip()):
                return inner.strip()
    line = rest.split("\n", 1)[0]
    m = _SENTENCE_END.search(line)
    cand = (line[: m.start()] if m else line).strip(" \t*.:")
    if not cand:
        return None
    if any(c.isdigit() for c in cand) or "\\" in cand:
        return cand
    if cand.lower() in _WORD_ANSWERS or re.fullmatch(r"\(?[A-Ea-e]\)?", cand):
        return cand
    return None


def _last_answer_phrase(text: str) -> str | None:
    for m in reversed(list(_PHRASE_RE.finditer(text))):
        cand = _phrase_candidate(text[m.end() :])
        if cand:
            return cand
    return None


_LAST_NUM_RE = re.compile(
    r"(?<![\w.\\])-?\\[dt]?frac(?:\{-?\d+\}\{-?\d+\}|\d\d)"
    r"|(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+(?![\d.]))?"
)


def _last_number(text: str) -> str | None:
    nums = _LAST_NUM_RE.findall(text)
    return nums[-1] if nums else None


def extract_answer(text: str) -> str | None:
    """The final answer of a model output, or ``None`` when it holds none (see the module docstring)."""
    if not text:
        return None
    cut = text.rfind(THINK_END)
    if cut >= 0:
        text = text[cut + len(THINK_END) :]
    for rule in (_last_boxed, _last_hashes, _last_answer_phrase, _last_number):
        ans = rule(text)
        if ans is not None:
            return ans
    return None


def _extract_gold(gold: str) -> str:
    """The reference answer: a box / ``####`` / answer phrase, else the whole string when it is one line."""
    g = gold.strip()
    if not g:
        raise ValueError("empty gold answer")
    for rule in (_last_boxed, _last_hashes, _last_answer_phrase):
        ans = rule(g)
        if ans is not None:
            return ans
    if "\n" not in g:
        return g
    return _last_number(g) or g


# ----------------------------------------------------------------------------------------------------------
# normalization

_TEXT_CMDS = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|textup|texttt|mathrm|mathbf|mathit|mbox)\s*\{")
_DROP_CMDS = re.compile(r"\\(?:displaystyle|textstyle|left|right|[bB]igg?[lr]?)(?![A-Za-z])")
_PERCENT_TAIL = re.compile(r"\s*(?:\\?%|\bper\s*cent\b|\bpercent\b)\s*$", re.IGNORECASE)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°")
_ASSIGN = re.compile(r"^(?:[A-Za-z](?:_\{?\w+\}?)?|\\[A-Za-z]+)\s*=\s*(.+)$", re.DOTALL)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_LEAD_NUM = re.compile(
    rf"[+-]?(?:\\frac\{{[+-]?{_DEC}\}}\{{[+-]?{_DEC}\}}|(?:\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|{_DEC})(?:/{_DEC})?)"
)
_UNIT_TAIL = re.compile(r"[A-Za-z]+(?:[ \t./-]+[A-Za-z]+)*\.?(?:\^\{?[23]\}?)?")
_KNOWN_UNITS = frozenset(
    {"m", "cm", "mm", "km", "g", "kg", "mg", "l", "ml", "s", "h", "hr", "hrs", "min", "mins", "sec", "secs"}
    | {"ft", "in", "lb", "lbs", "oz", "mi", "yd", "mph", "kph", "kmh"}
)
_NOT_UNITS = frozenset({"pi", "and", "or", "plus", "minus", "times", "over", "divided", "sqrt", "i", "e"})


def _unwrap_text(s: str) -> str:
    while True:
        m = _TEXT_CMDS.search(s)
        if not m:
            return s
        end = _group_end(s, m.end() - 1)
        if end is None:  # unclosed: drop the command, keep the rest
            return s[: m.start()] + s[m.end() :]
        s = s[: m.start()] + s[m.end() : end - 1] + s[end:]


def _brace_args(s: str, cmd: str, nargs: int) -> str:
    r"""Give every argument of ``\cmd`` braces: ``\frac12`` -> ``\frac{1}{2}``, ``\sqrt2`` -> ``\sqrt{2}``."""
    out = []
    i = 0
    pat = re.compile(re.escape(cmd) + r"(?![A-Za-z])")
    while True:
        m = pat.search(s, i)
        if not m:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i : m.end()])
        j = m.end()
        for _ in range(nargs):
            while j < len(s) and s[j].isspace():
                j += 1
            if j >= len(s):
                break
            if s[j] == "{":
                end = _group_end(s, j) or len(s)
                arg, j = s[j:end], end
            elif s[j] == "[" and cmd == "\\sqrt" and "]" in s[j:]:  # \sqrt[3]{x}: keep the index, then the arg
                k = s.index("]", j) + 1
                out.append(s[j:k])
                j = k
                while j < len(s) and s[j].isspace():
                    j += 1
                if j >= len(s):
                    break
                if s[j] == "{":
                    end = _group_end(s, j) or len(s)
                    arg, j = s[j:end], end
                else:
                    arg, j = "{" + s[j] + "}", j + 1
            elif s[j] == "\\":
                word = re.match(r"\\[A-Za-z]+|\\.", s[j:])
                tok = word.group(0) if word else "\\"
                arg, j = "{" + tok + "}", j + len(tok)
            else:
                arg, j = "{" + s[j] + "}", j + 1
            out.append(arg)
        i = j


def _strip_outer_braces(s: str) -> str:
    while s.startswith("{") and _group_end(s, 0) == len(s):
        s = s[1:-1].strip()
    return s


def _clean(ans: str, strip_assign: bool = True) -> tuple[str, bool]:
    """LaTeX/units cleanup; returns the cleaned answer (single spaces) and whether it carried a percent sign.

    ``strip_assign`` drops a ``x = `` prefix; off for list items, where ``x=1,y=2`` names which value is which.
    """
    s = ans.strip()
    boxed = _boxed_contents(s)
    if boxed:
        s = boxed[-1]
    s = s.replace("\u2212", "-").replace("\u00a0", " ")
    s = _unwrap_text(s)
    s = _DROP_CMDS.sub("", s)
    s = s.replace("\\$", "").replace("$", "")
    for d in ("\\(", "\\)", "\\[", "\\]"):
        s = s.replace(d, "")
    s = re.sub(r"(?<=\d)\\,(?=\d{3}(?!\d))", "", s)  # 1\,234
    s = s.replace("{,}", ",")
    s = s.replace("\\!", "")
    s = re.sub(r"\\q?quad(?![A-Za-z])|\\[,;: ]|~", " ", s)
    s = _DEGREES.sub("", s)
    s = " ".join(s.split()).rstrip(". ")
    percent = False
    m = _PERCENT_TAIL.search(s)
    if m:
        percent = True
        s = s[: m.start()].rstrip()
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = _brace_args(s, "\\frac", 2)
    s = _brace_args(s, "\\sqrt", 1)
    s = _strip_outer_braces(s)
    m = _ASSIGN.match(s)
    if m and strip_assign and s.count("=") == 1:
        s = m.group(1).strip()
    m = _LEAD_NUM.match(s)
    if m and m.end() < len(s):
        tail = s[m.end() :]
        words = tail.strip()
        if _UNIT_TAIL.fullmatch(words):
            first = re.match(r"[A-Za-z]+", words).group(0).lower()
            spaced = tail[0].isspace()
            if first in _KNOWN_UNITS or (spaced and len(first) > 1 and first not in _NOT_UNITS):
                s = m.group(0)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s, percent


_NUM_PATTERNS = (
    re.compile(rf"(?P<sign>[+-]?)(?P<num>{_DEC})"),
    re.compile(rf"(?P<sign>[+-]?)(?P<num>{_DEC})(?:e|\\times10\^|\\cdot10\^)\{{?(?P<exp>[+-]?\d+)\}}?"),
    re.compile(rf"(?P<sign>[+-]?)(?P<num>[+-]?{_DEC})/(?P<den>[+-]?{_DEC})"),
    re.compile(rf"(?P<sign>[+-]?)\\frac\{{(?P<num>[+-]?{_DEC})\}}\{{(?P<den>[+-]?{_DEC})\}}"),
)


def _parse_number(s: str) -> tuple[Fraction, int | None] | None:
    """Exact value of a numeric answer and its digits after the point when it is a plain decimal."""
    s = "".join(s.split())
    for pat in _NUM_PATTERNS:
        m = pat.fullmatch(s)
        if not m:
            continue
        gd = m.groupdict()
        num = gd["num"]
        value = Fraction(num.rstrip(".") or "0")
        places = None
        if gd.get("den") is not None:
            den = Fraction(gd["den"].rstrip("."))
            if den == 0:
                return None
            value /= den
        elif gd.get("exp") is not None:
            value *= Fraction(10) ** int(gd["exp"])
        elif "." in num:
            places = len(num.split(".", 1)[1])
        if gd["sign"] == "-":
            value = -value
        return value, places
    return None


def _format_number(q: Fraction) -> str:
    if q.denominator == 1:
        return str(q.numerator)
    if _terminates(q):
        p = 0
        while (q * 10**p).denominator != 1:
            p += 1
        digits = str(abs(q.numerator) * (10**p // q.denominator)).rjust(p + 1, "0")
        return ("-" if q < 0 else "") + digits[:-p] + "." + digits[-p:]
    return f"{q.numerator}/{q.denominator}"


def _terminates(q: Fraction) -> bool:
    d = q.denominator
    for f in (2, 5):
        while d % f == 0:
            d //= f
    return d == 1


def _split_items(s: str) -> tuple[str, list[str], str] | None:
    """``(open, items, close)`` when ``s`` (no whitespace) is a comma-separated list, tuple or interval."""
    open_, close, body = "", "", s
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        depth = 0
        for i, c in enumerate(s):
            depth += c in "([{"
            depth -= c in ")]}"
            if depth == 0 and i < len(s) - 1:
                break
        else:
            open_, close, body = s[0], s[-1], s[1:-1]
    items, depth, start, i = [], 0, 0, 0
    while i < len(body):
        c = body[i]
        if c == "\\":  # \{ \} \, are not structure
            i += 2
            continue
        depth += c in "([{"
        depth -= c in ")]}"
        if c == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
        i += 1
    items.append(body[start:])
    if len(items) < 2 or not all(items):
        return None
    return open_, items, close


@dataclass(frozen=True)
class _Answer:
    text: str  # canonical form (what normalize_answer returns)
    value: Fraction | None  # exact value for a numeric answer
    places: int | None  # digits after the point when written as a decimal
    percent: bool
    items: tuple[str, tuple[_Answer, ...], str] | None  # list / tuple / interval


def _parse(ans: str, strip_assign: bool = True) -> _Answer:
    s, percent = _clean(ans, strip_assign)
    num = _parse_number(s)
    if num is not None:
        return _Answer(_format_number(num[0]), num[0], num[1], percent, None)
    compact = "".join(s.split())
    split = _split_items(compact)
    if split is not None:
        open_, raw, close = split
        parsed = tuple(_parse(x, strip_assign=False) for x in raw)
        text = open_ + ",".join(p.text for p in parsed) + close
        return _Answer(text, None, None, percent, (open_, parsed, close))
    if re.fullmatch(r"[A-Za-z]+", compact):
        compact = compact.lower()
    return _Answer(compact, None, None, percent, None)


def normalize_answer(ans: str) -> str:
    """Canonical string of an answer (see the module docstring); percent signs and units are dropped."""
    return _parse(ans).text


# ----------------------------------------------------------------------------------------------------------
# equivalence

_MIN_ROUNDED_PLACES = 3


def _close(dec: _Answer, other: Fraction) -> bool:
    """``dec`` is a long decimal that may be a rounding of the non-terminating ``other``."""
    return (
        dec.places is not None
        and dec.places >= _MIN_ROUNDED_PLACES
        and not _terminates(other)
        and abs(dec.value - other) < Fraction(1, 10**dec.places)
    )


def _numbers_equal(a: _Answer, b: _Answer) -> bool:
    return a.value == b.value or _close(a, b.value) or _close(b, a.value)


def _equal(a: _Answer, b: _Answer) -> bool:
    if a.value is not None and b.value is not None:
        if _numbers_equal(a, b):
            return True
        if a.percent != b.percent:  # "50%" vs "0.5"
            p, q = (a, b) if a.percent else (b, a)
            places = None if p.places is None else p.places + 2
            scaled = _Answer(p.text, p.value / 100, places, False, None)
            return _numbers_equal(scaled, q)
        return False
    if a.text == b.text:
        return True
    if a.items is not None and b.items is not None:
        (ao, ai, ac), (bo, bi, bc) = a.items, b.items
        return ao == bo and ac == bc and len(ai) == len(bi) and all(map(_equal, ai, bi))
    return False


def math_verify_available() -> bool:
    """Whether the optional ``math-verify`` backend (``symbolic=True``) can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def _math_verify_equal(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:
        return False
    # math-verify times out with signal.alarm, which only works in the main thread.
    limit = 5 if threading.current_thread() is threading.main_thread() else None

    def as_latex(x: str) -> str:
        return x if "$" in x or "\\boxed" in x else f"${x}$"

    try:
        pa = parse(as_latex(a), parsing_timeout=limit)
        pb = parse(as_latex(b), parsing_timeout=limit)
        if not pa or not pb:
            return False
        return bool(verify(pb, pa, timeout_seconds=limit))
    except Exception:  # a backend failure is "not shown equal", never a crash of the harness
        return False


def answers_equal(a: str | None, b: str | None, *, symbolic: bool = False) -> bool:
    """Whether two extracted answers are equivalent; ``None`` on either side is ``False``.

    ``b`` is the reference.  ``symbolic=True`` also tries ``math-verify`` when installed (see module docstring).
    """
    if a is None or b is None:
        return False
    if _equal(_parse(a), _parse(b)):
        return True
    return symbolic and _math_verify_equal(a, b)


def score(output_text: str, gold: str, *, symbolic: bool = False) -> dict:
    """Score one model output against a gold answer or GSM8K-style gold solution.

    Returns ``{"pred": str | None, "gold": str, "correct": bool, "extracted": bool}`` where ``pred`` and
    ``gold`` are the extracted (not normalized) answers and ``extracted`` says whether ``pred`` was found.
    """
    pred = extract_answer(output_text)
    ref = _extract_gold(gold)
    return {
        "pred": pred,
        "gold": ref,
        "correct": answers_equal(pred, ref, symbolic=symbolic),
        "extracted": pred is not None,
    }
