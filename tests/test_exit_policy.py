"""ExitPolicy / SignalSmoother / ExitConfig on plain lists (pure Python: no torch, no model)."""

import itertools
import math

import pytest

from specexit.boundaries import BoundaryDetector
from specexit.errors import ConfigError
from specexit.exit_policy import (
    DEFAULT_THRESHOLDS,
    SIGNAL_NAMES,
    ExitConfig,
    ExitDecision,
    ExitPolicy,
    ExitRecord,
    SignalSmoother,
    passes,
)

TEXTS = ["<think>", "</think>", "Q", "Hello", "A", "B", "C", "D", "E", "F", "\n", "\n\n", ".\n\n", " But", "So", "Ans"]
VOCAB = dict(enumerate(TEXTS))
ID = {t: i for i, t in VOCAB.items()}
THINK, END = ID["<think>"], ID["</think>"]

GOOD = {"confidence": 0.9, "progress": 0.5, "remain": 100.0}
BAD = {"confidence": 0.5, "progress": 0.1, "remain": 300.0}
EDGE = dict(DEFAULT_THRESHOLDS)  # exactly at the threshold: strict inequalities fail


def ids(*texts: str) -> list[int]:
    return [ID[t] for t in texts]


def make_policy(
    thresholds=None,
    *,
    prompt=(THINK,),
    tail: str = "",
    enabled: bool = True,
    available=None,
    think_start_id: int | None = THINK,
    **cfg,
) -> ExitPolicy:
    cfg.setdefault("smoothing", "none")
    config = ExitConfig(thresholds=dict(DEFAULT_THRESHOLDS) if thresholds is None else thresholds, **cfg)
    detector = BoundaryDetector(VOCAB.__getitem__, config.paragraph_boundaries, config.connectors)
    policy = ExitPolicy(config, detector, think_start_id, END, available_signals=available, enabled=enabled)
    policy.start(list(prompt), tail)
    return policy


def signals(**kw: float) -> dict[str, float]:
    return {**GOOD, **kw}


# ---------------------------------------------------------------------------------------------
# smoothing


@pytest.mark.parametrize(
    ("alpha", "xs", "expected"),
    [
        (0.1, [1.0, 0.0, 0.0], [1.0, 0.9, 0.81]),
        (0.5, [1.0, 0.0, 1.0, 1.0], [1.0, 0.5, 0.75, 0.875]),
        (0.25, [200.0, 100.0, 100.0], [200.0, 175.0, 156.25]),
        (1.0, [0.3, 0.9, 0.1], [0.3, 0.9, 0.1]),
    ],
)
def test_ewma(alpha, xs, expected):
    s = SignalSmoother("ewma", alpha=alpha)
    assert s.value is None
    got = [s.update(x) for x in xs]
    assert got == pytest.approx(expected)
    assert s.value == pytest.approx(expected[-1])


def test_ewma_initialised_with_first_value_not_zero():
    s = SignalSmoother("ewma", alpha=0.1)
    assert s.update(0.7) == 0.7  # not 0.1 * 0.7


def test_momentum_window_3():
    s = SignalSmoother("momentum", window=3)
    assert s.update(0.1) is None
    assert s.value is None
    assert s.update(0.2) is None
    # last + mean step over [0.1, 0.2, 0.4] = 0.4 + (0.4 - 0.1) / 2
    assert s.update(0.4) == pytest.approx(0.55)
    # window slides to [0.2, 0.4, 0.3]: 0.3 + (0.3 - 0.2) / 2
    assert s.update(0.3) == pytest.approx(0.35)
    # [0.4, 0.3, 0.0]: 0.0 + (0.0 - 0.4) / 2
    assert s.update(0.0) == pytest.approx(-0.2)


def test_momentum_window_2_and_1():
    s = SignalSmoother("momentum", window=2)
    assert s.update(100.0) is None
    assert s.update(90.0) == pytest.approx(80.0)
    assert s.update(95.0) == pytest.approx(100.0)
    s = SignalSmoother("momentum", window=1)  # no step to average: the raw value
    assert s.update(5.0) == 5.0
    assert s.update(7.0) == 7.0


def test_momentum_default_window_10():
    s = SignalSmoother("momentum")
    got = [s.update(float(i)) for i in range(11)]
    assert got[:9] == [None] * 9
    assert got[9] == pytest.approx(10.0)  # 9 + (9 - 0) / 9
    assert got[10] == pytest.approx(11.0)


def test_window_mean():
    s = SignalSmoother("window", window=3)
    got = [s.update(x) for x in [3.0, 6.0, 9.0, 12.0, 0.0]]
    assert got == pytest.approx([3.0, 4.5, 6.0, 9.0, 7.0])


def test_none_is_raw():
    s = SignalSmoother("none")
    assert [s.update(x) for x in [0.3, 0.9, 0.1]] == [0.3, 0.9, 0.1]


def test_unknown_smoothing_method():
    with pytest.raises(ConfigError, match=r"smoothing must be one of .*'median'"):
        SignalSmoother("median")


# ---------------------------------------------------------------------------------------------
# configuration errors


def test_default_config_is_valid_and_follows_the_paper():
    cfg = ExitConfig()
    cfg.validate()
    cfg.validate(list(SIGNAL_NAMES))
    assert cfg.thresholds == {"confidence": 0.8, "progress": 0.3, "remain": 200.0}
    assert cfg.thresholds is not DEFAULT_THRESHOLDS
    assert (cfg.smoothing, cfg.alpha, cfg.window, cfg.lagged) == ("ewma", 0.1, 10, False)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"thresholds": {}}, "at least one signal threshold"),
        ({"thresholds": {"confidance": 0.8}}, r"unknown exit signal 'confidance'.*confidence, progress, remain"),
        ({"thresholds": {"confidence": 0.8, "Remain": 200}}, "unknown exit signal 'Remain'"),
        ({"thresholds": {"confidence": math.nan}}, r"threshold for 'confidence' must be a finite number, got nan"),
        ({"thresholds": {"remain": "200"}}, r"threshold for 'remain' must be a finite number"),
        ({"thresholds": {"progress": None}}, r"threshold for 'progress' must be a finite number"),
        ({"thresholds": {"confidence": math.inf}}, r"threshold for 'confidence' must be a finite number, got inf"),
        ({"smoothing": "median"}, "smoothing must be one of"),
        ({"alpha": 0.0}, r"alpha must be a number in \(0, 1\], got 0.0"),
        ({"alpha": -0.5}, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": 1.5}, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": math.nan}, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": "0.5"}, r"alpha must be a number in \(0, 1\], got '0.5'"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
        ({"window": -3}, "window must be an integer >= 1, got -3"),
        ({"window": 2.5}, "window must be an integer >= 1, got 2.5"),
        ({"window": "10"}, "window must be an integer >= 1, got '10'"),
        ({"min_thinking_tokens": -1}, "min_thinking_tokens must be a number >= 0, got -1"),
        ({"min_thinking_tokens": None}, "min_thinking_tokens must be a number >= 0, got None"),
        ({"paragraph_boundaries": False}, "no boundary kind enabled"),
        ({"paragraph_boundaries": False, "connectors": ()}, "no boundary kind enabled"),
    ],
)
def test_config_errors(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ExitConfig(**kwargs).validate()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 1.0},
        {"alpha": 1},
        {"window": 1},
        {"min_thinking_tokens": 5},
        {"paragraph_boundaries": False, "connectors": ("So",)},
    ],
)
def test_config_edges_that_are_valid(kwargs):
    ExitConfig(**kwargs).validate()


def test_threshold_naming_a_signal_the_draft_lacks():
    cfg = ExitConfig(thresholds={"confidence": 0.8, "remain": 200.0})
    cfg.validate(["confidence", "remain"])
    cfg.validate(["remain", "progress", "confidence"])
    with pytest.raises(ConfigError, match=r"\['remain'\] but the draft predicts only \[confidence, progress\]"):
        cfg.validate(["confidence", "progress"])
    with pytest.raises(ConfigError, match=r"\['confidence', 'remain'\] but the draft predicts only \[none\]"):
        cfg.validate([])


def test_policy_validates_only_when_enabled():
    with pytest.raises(ConfigError, match="predicts only"):
        make_policy({"progress": 0.3}, available=["confidence"])
    with pytest.raises(ConfigError, match="unknown exit signal"):
        make_policy({"conf": 0.3})
    # mode spec / vanilla: a plain draft (no signal heads) must still work
    p = make_policy(available=[], enabled=False)
    assert p.step(ids("A", "\n\n"), GOOD).keep is None


def test_passes_is_strict():
    assert passes("confidence", 0.81, 0.8) and not passes("confidence", 0.8, 0.8)
    assert passes("progress", 0.31, 0.3) and not passes("progress", 0.3, 0.3)
    assert passes("remain", 199.0, 200.0) and not passes("remain", 200.0, 200.0)
    assert not passes("remain", 201.0, 200.0) and not passes("confidence", 0.1, 0.8)


# ---------------------------------------------------------------------------------------------
# the rule: all named signals must pass


SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(SIGNAL_NAMES, r)]


def run_round(named, values) -> ExitDecision:
    p = make_policy({n: DEFAULT_THRESHOLDS[n] for n in named})
    return p.step(ids("Hello", "\n\n", "A"), values)


@pytest.mark.parametrize("named", SUBSETS, ids="+".join)
def test_exits_when_all_named_signals_pass(named):
    d = run_round(named, GOOD)
    assert d.exit and d.keep == 2
    assert d.record is not None and set(d.record.smoothed) == set(named)


@pytest.mark.parametrize("named", SUBSETS, ids="+".join)
def test_each_named_signal_can_block(named):
    for n in named:
        assert run_round(named, signals(**{n: BAD[n]})).keep is None, n
        assert run_round(named, signals(**{n: EDGE[n]})).keep is None, f"{n} at threshold"
    # every named signal failing at once
    assert run_round(named, BAD).keep is None


@pytest.mark.parametrize("named", SUBSETS, ids="+".join)
def test_unnamed_signals_never_block(named):
    others = {n: BAD[n] for n in SIGNAL_NAMES if n not in named}
    d = run_round(named, signals(**others))
    assert d.keep == 2
    assert d.record is not None
    assert d.record.raw == {n: GOOD[n] for n in named}  # unnamed signals are not even recorded
    assert d.record.thresholds == {n: DEFAULT_THRESHOLDS[n] for n in named}


@pytest.mark.parametrize(
    ("name", "just_passing"), [("confidence", 0.8000001), ("progress", 0.3000001), ("remain", 199.9999)]
)
def test_threshold_edge(name, just_passing):
    assert run_round([name], {name: DEFAULT_THRESHOLDS[name]}).keep is None
    assert run_round([name], {name: just_passing}).keep == 2


def test_custom_thresholds():
    th = {"confidence": 0.5, "remain": 50.0}
    assert make_policy(th).step(ids("A", "\n\n"), {"confidence": 0.6, "remain": 40.0}).keep == 2
    assert make_policy(th).step(ids("A", "\n\n"), {"confidence": 0.6, "remain": 60.0}).keep is None
    assert make_policy(th).step(ids("A", "\n\n"), {"confidence": 0.4, "remain": 40.0}).keep is None


def test_no_boundary_no_exit():
    p = make_policy()
    for _ in range(5):
        assert p.step(ids("A", "B", "\n", "C"), GOOD).keep is None
    assert p.thinking_tokens == 20 and p.record is None and not p.finished


# ---------------------------------------------------------------------------------------------
# where the cut goes


def test_only_first_boundary_of_round_is_checked():
    p = make_policy()
    d = p.step(ids("A", "\n\n", "B", ".\n\n", "C"), GOOD)
    assert d.keep == 2
    assert p.thinking_tokens == 2 and p.new_tokens == 2
    assert d.record is not None and d.record.boundary_text == "\n\n"


def test_paragraph_cut_keeps_the_break():
    p = make_policy()
    d = p.step(ids("A", "B", ".\n\n", "C", "D"), GOOD)
    assert d.keep == 3
    assert (p.thinking_tokens, p.new_tokens) == (3, 3)


def test_split_newline_boundary_across_rounds():
    p = make_policy()
    assert p.step(ids("A", "\n"), BAD).keep is None
    d = p.step(ids("\n", "B"), GOOD)
    assert d.keep == 1
    assert (p.thinking_tokens, p.new_tokens) == (3, 3)


def test_connector_cut_drops_the_connector():
    p = make_policy(paragraph_boundaries=False, connectors=("But", "So"))
    d = p.step(ids("A", "B", "\n\n", " But", "C"), GOOD)
    assert d.keep == 3
    assert (p.thinking_tokens, p.new_tokens) == (3, 3)
    assert d.record is not None
    assert (d.record.boundary, d.record.boundary_text, d.record.thinking_tokens, d.record.new_tokens) == (
        "connector",
        " But",
        3,
        3,
    )


def test_connector_at_start_of_round_keeps_nothing_of_the_round():
    p = make_policy(paragraph_boundaries=False, connectors=("So",))
    assert p.step(ids("A", "\n\n"), GOOD).keep is None
    d = p.step(ids("So", "B"), GOOD)
    assert d.keep == 0 and d.exit  # keep 0 is still an exit
    assert (p.thinking_tokens, p.new_tokens) == (2, 2)


def test_connector_after_failed_paragraph_check_in_earlier_round():
    p = make_policy(connectors=("But",))
    assert p.step(ids("A", "\n\n"), BAD).keep is None  # the paragraph break was checked and failed
    d = p.step(ids(" But", "B"), GOOD)
    assert d.keep == 0
    assert d.record is not None and d.record.boundary == "connector" and d.record.thinking_tokens == 2


def test_paragraph_and_connector_in_one_round_cut_at_the_break():
    p = make_policy(connectors=("But",))
    d = p.step(ids("A", "\n\n", " But", "B"), GOOD)
    assert d.keep == 2
    assert d.record is not None and d.record.boundary == "paragraph"


def test_paragraph_disabled_only_connectors():
    p = make_policy(paragraph_boundaries=False, connectors=("So",))
    assert p.step(ids("A", "\n\n", "B", ".\n\n", "\n", "\n"), GOOD).keep is None
    assert p.step(ids("C", "So"), GOOD).keep is None  # mid-paragraph
    d = p.step(ids("\n\n", "So"), GOOD)
    assert d.keep == 1
    assert p.thinking_tokens == 9  # 6 + 2 + the break


# ---------------------------------------------------------------------------------------------
# min_thinking_tokens


def test_min_thinking_tokens_skips_early_boundary_in_same_round():
    p = make_policy(min_thinking_tokens=3)
    d = p.step(ids("A", "\n\n", "B", "\n\n", "C"), GOOD)
    assert d.keep == 4  # the first break would keep 2 < 3 thinking tokens
    assert p.thinking_tokens == 4


@pytest.mark.parametrize(("minimum", "keep"), [(0, 2), (2, 2), (3, 4), (4, 4), (5, None)])
def test_min_thinking_tokens_edge(minimum, keep):
    p = make_policy(min_thinking_tokens=minimum)
    assert p.step(ids("A", "\n\n", "B", "\n\n"), GOOD).keep == keep


def test_min_thinking_tokens_across_rounds():
    p = make_policy(min_thinking_tokens=3)
    assert p.step(ids("A", "\n\n"), GOOD).keep is None
    d = p.step(ids("B", "\n\n", "C"), GOOD)
    assert d.keep == 2
    assert (p.thinking_tokens, p.new_tokens) == (4, 4)


@pytest.mark.parametrize(("minimum", "keep"), [(2, 2), (3, None)])
def test_min_thinking_tokens_counts_kept_tokens_for_connectors(minimum, keep):
    # the connector is dropped, so only "A\n\n" (2 tokens) would be kept
    p = make_policy(paragraph_boundaries=False, connectors=("So",), min_thinking_tokens=minimum)
    assert p.step(ids("A", "\n\n", "So"), GOOD).keep == keep


# ---------------------------------------------------------------------------------------------
# smoothing inside the policy


def test_policy_decides_on_ewma_value():
    p = make_policy({"confidence": 0.8}, smoothing="ewma", alpha=0.5)
    assert p.step(ids("A"), {"confidence": 0.5}).keep is None  # s = 0.5
    d = p.step(ids("\n\n"), {"confidence": 1.0})  # raw passes, s = 0.75 does not
    assert d.keep is None
    d = p.step(ids("B", "\n\n"), {"confidence": 1.0})  # s = 0.875
    assert d.keep == 2
    assert d.record is not None
    assert d.record.raw == {"confidence": 1.0}
    assert d.record.smoothed == pytest.approx({"confidence": 0.875})


def test_policy_ewma_alpha_one_is_raw():
    p = make_policy({"confidence": 0.8}, smoothing="ewma", alpha=1.0)
    assert p.step(ids("A"), {"confidence": 0.1}).keep is None
    assert p.step(ids("\n\n"), {"confidence": 0.9}).keep == 1


def test_policy_window_mean():
    p = make_policy({"remain": 200.0}, smoothing="window", window=2)
    assert p.step(ids("A"), {"remain": 500.0}).keep is None
    assert p.step(ids("\n\n"), {"remain": 100.0}).keep is None  # mean 300
    d = p.step(ids("\n\n"), {"remain": 150.0})  # mean of [100, 150] = 125
    assert d.keep == 1
    assert d.record is not None and d.record.smoothed == pytest.approx({"remain": 125.0})


def test_momentum_warm_up_never_exits():
    p = make_policy({"remain": 200.0}, smoothing="momentum", window=3)
    assert p.step(ids("A", "\n\n"), {"remain": 100.0}).keep is None
    assert p.smoothed() == {}
    assert p.step(ids("B", "\n\n"), {"remain": 90.0}).keep is None
    d = p.step(ids("C", "\n\n"), {"remain": 80.0})
    assert d.keep == 2
    assert d.record is not None and d.record.smoothed == pytest.approx({"remain": 70.0})  # 80 + (80 - 100) / 2
    assert p.thinking_tokens == 6


def test_missing_signal_in_read_out_means_not_ready():
    p = make_policy({"confidence": 0.8, "progress": 0.3})
    assert p.step(ids("A", "\n\n"), {"confidence": 0.9}).keep is None
    assert p.smoothed() == {"confidence": 0.9}
    assert p.step(ids("B", "\n\n"), {"confidence": 0.9, "progress": 0.5}).keep == 2


def test_rounds_without_read_out_do_not_update_smoothing():
    p = make_policy({"confidence": 0.8}, smoothing="ewma", alpha=0.5)
    assert p.step(ids("A"), None).keep is None
    assert p.smoothed() == {} and p.history == []
    # no value yet: a boundary cannot exit
    assert p.step(ids("B", "\n\n"), None).keep is None
    p.step(ids("C"), {"confidence": 0.9})
    p.step(ids("D"), None)
    p.step(ids("E"), None)
    assert p.smoothed() == {"confidence": 0.9}
    p.step(ids("F"), {"confidence": 0.5})
    assert p.smoothed() == pytest.approx({"confidence": 0.7})  # 0.5 * 0.5 + 0.5 * 0.9: the None rounds are skipped
    assert len(p.history) == 2


def test_momentum_counts_only_read_outs():
    p = make_policy({"remain": 200.0}, smoothing="momentum", window=2)
    p.step(ids("A"), {"remain": 300.0})
    p.step(ids("B"), None)
    assert p.smoothed() == {}
    d = p.step(ids("\n\n"), {"remain": 250.0})  # 250 + (250 - 300) = 200: not < 200
    assert d.keep is None
    assert p.smoothed() == pytest.approx({"remain": 200.0})


# ---------------------------------------------------------------------------------------------
# lagged decisions


def test_lagged_uses_previous_smoothed_value():
    fresh = make_policy({"confidence": 0.8})
    lagged = make_policy({"confidence": 0.8}, lagged=True)
    for p in (fresh, lagged):
        assert p.step(ids("A"), {"confidence": 0.9}).keep is None
    assert fresh.step(ids("\n\n"), {"confidence": 0.5}).keep is None
    d = lagged.step(ids("\n\n"), {"confidence": 0.5})
    assert d.keep == 1
    assert d.record is not None
    assert d.record.raw == {"confidence": 0.5}  # this round's read-out ...
    assert d.record.smoothed == {"confidence": 0.9}  # ... but the decision used the previous value


def test_lagged_ignores_this_rounds_good_value():
    fresh = make_policy({"confidence": 0.8})
    lagged = make_policy({"confidence": 0.8}, lagged=True)
    for p in (fresh, lagged):
        assert p.step(ids("A"), {"confidence": 0.5}).keep is None
    assert fresh.step(ids("\n\n"), {"confidence": 0.9}).keep == 1
    assert lagged.step(ids("\n\n"), {"confidence": 0.9}).keep is None
    assert lagged.step(ids("\n\n"), {"confidence": 0.1}).keep == 1  # now it sees 0.9


def test_lagged_first_read_out_never_exits():
    p = make_policy({"confidence": 0.8}, lagged=True)
    assert p.step(ids("\n\n"), {"confidence": 0.99}).keep is None
    assert p.history == [(0, {"confidence": 0.99}, {"confidence": 0.99})]


def test_lagged_with_ewma():
    p = make_policy({"confidence": 0.8}, smoothing="ewma", alpha=0.5, lagged=True)
    p.step(ids("A"), {"confidence": 1.0})  # s = 1.0
    p.step(ids("B"), {"confidence": 0.4})  # s = 0.7
    d = p.step(ids("\n\n"), {"confidence": 1.0})  # decides on 0.7, then s = 0.85
    assert d.keep is None
    assert p.smoothed() == pytest.approx({"confidence": 0.85})
    d = p.step(ids("\n\n"), {"confidence": 0.0})  # decides on 0.85
    assert d.keep == 1
    assert d.record is not None and d.record.smoothed == pytest.approx({"confidence": 0.85})


# ---------------------------------------------------------------------------------------------
# the thinking span


@pytest.mark.parametrize(
    ("prompt", "opened"),
    [
        (("Q", "<think>"), True),
        (("<think>",), True),
        (("Q", "<think>", "\n"), True),
        (("Q", "<think>", "\n\n", "</think>", "\n\n"), False),
        (("<think>", "A", "</think>", "Q", "<think>"), True),
        (("Q",), False),
        ((), False),
        (("</think>",), False),
    ],
)
def test_start_detects_thinking_opened_by_prompt(prompt, opened):
    p = make_policy(prompt=ids(*prompt))
    assert p.in_thinking is opened
    d = p.step(ids("A", "\n\n"), GOOD)
    assert d.exit is opened
    assert p.thinking_tokens == (2 if opened else 0)
    assert p.new_tokens == 2


def test_prompt_tail_is_boundary_context():
    p = make_policy(tail="Question?<think>\n")
    d = p.step(ids("\n", "A"), GOOD)
    assert d.keep == 1


def test_thinking_opened_by_generated_think_start():
    p = make_policy(prompt=ids("Q"))
    # the round that opens the span is not checked (its read-out mixes in non-thinking positions)
    d = p.step(ids("A", "<think>", "B", "\n\n", "C"), GOOD)
    assert d.keep is None
    assert p.in_thinking and (p.thinking_tokens, p.new_tokens) == (3, 5)
    assert p.history == []
    d = p.step(ids("D", "\n\n", "E"), GOOD)
    assert d.keep == 2
    assert (p.thinking_tokens, p.new_tokens) == (5, 7)
    assert d.record is not None and (d.record.thinking_tokens, d.record.new_tokens) == (5, 7)
    assert p.history == [(3, GOOD, GOOD)]


def test_think_start_as_first_generated_token():
    p = make_policy(prompt=ids("Q"))
    assert p.step(ids("<think>"), None).keep is None
    assert p.in_thinking and p.thinking_tokens == 0 and p.new_tokens == 1
    assert p.step(ids("A", "\n\n"), GOOD).keep == 2
    assert p.record is not None and (p.record.thinking_tokens, p.record.new_tokens) == (2, 3)


def test_generated_think_start_resets_boundary_context():
    p = make_policy(prompt=ids("Q"), tail="Q\n")
    p.step(ids("<think>"), None)
    # without the reset the prompt's "\n" + this "\n" would look like a blank line
    assert p.step(ids("\n", "A"), GOOD).keep is None
    assert p.step(ids("\n", "\n"), GOOD).keep == 2


def test_no_thinking_span_never_exits():
    p = make_policy(prompt=ids("Q"))
    for _ in range(3):
        assert p.step(ids("A", "\n\n", "B"), GOOD).keep is None
    assert (p.thinking_tokens, p.new_tokens, p.history, p.record) == (0, 9, [], None)


def test_without_think_start_token_generated_markers_cannot_open():
    p = make_policy(prompt=ids("Q", "<think>"), think_start_id=None)
    assert not p.in_thinking
    assert p.step(ids("<think>", "A", "\n\n"), GOOD).keep is None
    assert p.step(ids("A", "\n\n"), GOOD).keep is None
    assert p.thinking_tokens == 0


def test_natural_think_end_stops_checking():
    p = make_policy()
    d = p.step(ids("A", "</think>", "\n\n", "B", "\n\n"), GOOD)
    assert d.keep is None
    assert p.finished and not p.in_thinking
    assert (p.thinking_tokens, p.new_tokens) == (1, 5)
    assert p.step(ids("\n\n", "Ans", "\n\n"), GOOD).keep is None
    assert p.step(ids("<think>", "A", "\n\n"), GOOD).keep is None  # no second thinking span
    assert (p.thinking_tokens, p.new_tokens, p.record) == (1, 11, None)
    assert len(p.history) == 1


def test_think_end_in_a_later_round():
    p = make_policy()
    p.step(ids("A", "B"), BAD)
    p.step(ids("\n\n", "C"), BAD)
    d = p.step(ids("D", "</think>", "Ans", "\n\n"), GOOD)
    assert d.keep is None and p.record is None
    assert (p.thinking_tokens, p.new_tokens) == (5, 8)


def test_boundary_before_natural_think_end_in_same_round_can_exit():
    p = make_policy()
    d = p.step(ids("A", "\n\n", "B", "</think>", "Ans"), GOOD)
    assert d.keep == 2
    assert (p.thinking_tokens, p.new_tokens) == (2, 2)


def test_disabled_policy_never_exits_but_counts_thinking():
    p = make_policy(enabled=False)
    assert p.step(ids("Hello"), None).keep is None
    assert p.step(ids("A", "\n\n", "B", ".\n\n"), GOOD).keep is None
    assert p.step(ids("C", "\n\n"), None).keep is None
    assert p.step(ids("D", "</think>", "Ans", "\n\n"), None).keep is None
    assert p.step(ids("Ans"), None).keep is None
    assert (p.thinking_tokens, p.new_tokens, p.rounds, p.record) == (8, 12, 5, None)
    assert p.finished and not p.in_thinking


def test_disabled_policy_without_thinking_counts_nothing():
    p = make_policy(prompt=ids("Q"), enabled=False)
    p.step(ids("A", "\n\n"), None)
    assert (p.thinking_tokens, p.new_tokens) == (0, 2)
    p.step(ids("<think>", "A", "B", "</think>", "C"), None)
    assert (p.thinking_tokens, p.new_tokens) == (2, 7)


# ---------------------------------------------------------------------------------------------
# exactly one exit, and the record


def test_exactly_one_exit_per_generation():
    p = make_policy()
    d = p.step(ids("A", "\n\n", "B"), GOOD)
    assert d.keep == 2
    record = p.record
    assert p.finished and not p.in_thinking
    n_hist = len(p.history)
    for _ in range(3):
        later = p.step(ids("B", "\n\n", "C", ".\n\n"), GOOD)
        assert later.keep is None and later.record is None
    assert p.step(ids("<think>", "A", "\n\n"), GOOD).keep is None
    assert p.record is record
    assert p.thinking_tokens == 2  # unchanged after the exit
    assert p.new_tokens == 2 + 12 + 3  # tokens after the exit still counted
    assert len(p.history) == n_hist


def test_exit_record_paragraph():
    p = make_policy(smoothing="ewma", alpha=0.5)
    assert p.step(ids("Hello"), None).keep is None  # first token: no read-out (prompt positions)
    assert p.step(ids("A", "B"), {"confidence": 0.9, "progress": 0.4, "remain": 300.0}).keep is None
    d = p.step(ids("C", ".\n\n", "D", "E"), {"confidence": 0.9, "progress": 0.6, "remain": 60.0, "extra": 1.0})
    assert d.exit and d.keep == 2
    assert d.record is p.record
    r = d.record
    assert r is not None
    assert (r.round, r.thinking_tokens, r.new_tokens, r.boundary, r.boundary_text) == (3, 5, 5, "paragraph", ".\n\n")
    assert r.raw == {"confidence": 0.9, "progress": 0.6, "remain": 60.0}
    assert r.smoothed == pytest.approx({"confidence": 0.9, "progress": 0.5, "remain": 180.0})
    assert r.thresholds == DEFAULT_THRESHOLDS
    assert (p.thinking_tokens, p.new_tokens, p.rounds) == (5, 5, 3)


def test_exit_record_fields_and_copy():
    p = make_policy({"confidence": 0.8, "remain": 200.0}, smoothing="ewma", alpha=0.5)
    p.step(ids("Hello"), None)
    p.step(ids("A", "B"), {"confidence": 0.9, "remain": 300.0})  # s = 0.9, 300
    d = p.step(ids("C", "\n\n", "D"), {"confidence": 0.5, "remain": 50.0})  # s = 0.7 (fails), 175
    assert d.keep is None
    d = p.step(ids("E", ".\n\n", "F"), {"confidence": 1.0, "remain": 50.0})  # s = 0.85, 112.5
    assert d.keep == 2
    r = p.record
    assert r is not None
    assert (r.round, r.thinking_tokens, r.new_tokens) == (4, 8, 8)
    assert r.smoothed == pytest.approx({"confidence": 0.85, "remain": 112.5})
    assert r.to_dict() == {
        "round": 4,
        "thinking_tokens": 8,
        "new_tokens": 8,
        "boundary": "paragraph",
        "boundary_text": ".\n\n",
        "raw": {"confidence": 1.0, "remain": 50.0},
        "smoothed": r.smoothed,
        "thresholds": {"confidence": 0.8, "remain": 200.0},
        "origin": None,  # the rule's source (ExitConfig.origin: calibrated / flags / defaults)
        "signals_at_exit": None,  # filled in by the exit controller (the policy alone has no draft)
    }
    # the record keeps its own copy of the thresholds
    p.config.thresholds["confidence"] = 0.99
    assert r.thresholds == {"confidence": 0.8, "remain": 200.0}


def test_exit_record_connector():
    p = make_policy({"progress": 0.3}, paragraph_boundaries=False, connectors=("But",))
    p.step(ids("Hello"), None)
    p.step(ids("A", "\n\n"), {"progress": 0.1})
    d = p.step(ids(" But", "B"), {"progress": 0.7})
    assert d.keep == 0
    assert d.record == ExitRecord(
        round=3,
        thinking_tokens=3,
        new_tokens=3,
        boundary="connector",
        boundary_text=" But",
        raw={"progress": 0.7},
        smoothed={"progress": 0.7},
        thresholds={"progress": 0.3},
    )
    assert (p.thinking_tokens, p.new_tokens) == (3, 3)


def test_exit_counts_with_markers_in_round():
    # thinking opened mid-stream and counted tokens include the marker in new_tokens only
    p = make_policy(prompt=ids("Q"))
    p.step(ids("Hello", "<think>", "A"), None)
    d = p.step(ids("B", "C", "\n\n", "D"), GOOD)
    assert d.keep == 3
    assert d.record is not None
    assert (d.record.thinking_tokens, d.record.new_tokens) == (4, 6)


# ---------------------------------------------------------------------------------------------
# history


def test_history_records_position_raw_and_smoothed():
    p = make_policy({"confidence": 0.8, "remain": 200.0}, smoothing="ewma", alpha=0.5)
    p.step(ids("Hello"), None)
    p.step(ids("A", "B"), {"confidence": 0.6, "remain": 300.0, "progress": 0.9})
    p.step(ids("C"), None)
    p.step(ids("D", "E", "F"), {"confidence": 1.0, "remain": 100.0})
    assert len(p.history) == 2
    (pos0, raw0, sm0), (pos1, raw1, sm1) = p.history
    assert (pos0, raw0, sm0) == (1, {"confidence": 0.6, "remain": 300.0}, {"confidence": 0.6, "remain": 300.0})
    assert (pos1, raw1) == (4, {"confidence": 1.0, "remain": 100.0})
    assert sm1 == pytest.approx({"confidence": 0.8, "remain": 200.0})
    assert p.record is None  # 0.8 is not > 0.8 (and there was no boundary)


def test_history_momentum_warm_up_has_partial_smoothed():
    p = make_policy({"remain": 200.0}, smoothing="momentum", window=2)
    p.step(ids("A"), {"remain": 300.0})
    p.step(ids("B"), {"remain": 200.0})
    assert p.history == [(0, {"remain": 300.0}, {}), (1, {"remain": 200.0}, {"remain": 100.0})]


def test_history_only_inside_thinking():
    p = make_policy(prompt=ids("Q"))
    p.step(ids("A"), GOOD)
    p.step(ids("<think>", "B"), GOOD)
    p.step(ids("C"), GOOD)
    p.step(ids("</think>"), GOOD)
    p.step(ids("Ans"), GOOD)
    assert p.history == [(1, GOOD, GOOD), (2, GOOD, GOOD)]
    assert p.rounds == 5


def test_max_keep_skips_a_boundary_with_no_room_for_the_marker():
    """The engine passes how many tokens may be kept so the forced think-end still fits the budget."""
    policy = make_policy({"confidence": 0.5})
    policy.step(ids("A"), signals())
    # keep would be 3 at the first break and 5 at the second: neither fits max_keep=2
    decision = policy.step(ids("A", "B", "\n\n", "C", "\n\n"), signals(), max_keep=2)
    assert not decision.exit and policy.record is None
    decision = policy.step(ids("D", "\n\n", "E"), signals(), max_keep=2)
    assert decision.keep == 2 and policy.record is not None


def test_thinking_budget_exits_at_exactly_n_thinking_tokens_without_signals():
    policy = make_policy({"confidence": 0.99}, thinking_budget=4, enabled=False)
    assert policy.can_exit
    assert not policy.step(ids("A", "B"), None).exit
    decision = policy.step(ids("C", "D", "E"), None)
    assert decision.keep == 2 and policy.thinking_tokens == 4 and policy.record.boundary == "budget"
    assert not policy.step(ids("F", "\n\n"), signals()).exit  # one exit per generation
    room = make_policy({"confidence": 0.99}, thinking_budget=2, enabled=False)
    assert not room.step(ids("A", "B", "C"), None, max_keep=1).exit  # no room for the marker yet
    assert room.step(ids("D"), None, max_keep=1).keep == 1
    with pytest.raises(ConfigError, match="thinking_budget must be a positive integer"):
        ExitConfig(thinking_budget=0).validate()


# ---------------------------------------------------------------------------------------------
# boundary read-out: each boundary is judged on the state right after it


def reads(*values: dict | None) -> list[dict | None]:
    return list(values)


def test_boundary_readout_judges_the_state_after_each_boundary():
    p = make_policy({"confidence": 0.8}, readout="boundary")
    toks = ids("A", "\n\n", "B", "\n\n", "C")
    # entry k: state after k tokens; the first boundary (after 2 tokens) is bad, the second good
    r = reads(None, {"confidence": 0.99}, {"confidence": 0.1}, {"confidence": 0.99}, {"confidence": 0.95}, None)
    d = p.step(toks, {"confidence": 0.99}, token_signals=r)
    assert d.exit and d.keep == 4 and p.thinking_tokens == 4
    assert p.record.raw == {"confidence": 0.95} and p.record.boundary == "paragraph"
    # round read-out on the same round: the round mean passes, so it exits at the first boundary
    q = make_policy({"confidence": 0.8})
    assert q.step(toks, {"confidence": 0.99}).keep == 2


def test_boundary_readout_ignores_states_away_from_boundaries():
    p = make_policy({"confidence": 0.8}, readout="boundary")
    r = reads({"confidence": 0.99}, {"confidence": 0.99}, {"confidence": 0.2}, {"confidence": 0.99}, None)
    assert not p.step(ids("A", "\n\n", "B", "C"), None, token_signals=r).exit
    assert [raw for _, raw, _ in p.history] == [{"confidence": 0.2}]  # one read-out: the one boundary


def test_boundary_at_the_rounds_last_token_is_judged_next_round_keeping_nothing():
    p = make_policy({"confidence": 0.8}, readout="boundary")
    assert not p.step(ids("A", "B", "\n\n"), None, token_signals=reads(None, None, None, None)).exit
    assert p.thinking_tokens == 3
    d = p.step(ids("C", "D"), None, token_signals=reads({"confidence": 0.9}, {"confidence": 0.0}, None))
    assert d.exit and d.keep == 0 and p.record.thinking_tokens == 3 and p.record.new_tokens == 3
    # a bad read-out there: no exit, the round goes on normally
    q = make_policy({"confidence": 0.8}, readout="boundary")
    q.step(ids("A", "\n\n"), None, token_signals=reads(None, None, None))
    assert not q.step(ids("C", "D"), None, token_signals=reads({"confidence": 0.3}, None, None)).exit
    assert q.thinking_tokens == 4


def test_boundary_readout_smooths_boundary_by_boundary():
    p = make_policy({"confidence": 0.8}, readout="boundary", smoothing="ewma", alpha=0.5)
    rd = [{"confidence": v} for v in (0.6, 0.0, 1.0, 1.0)]
    for v in rd[:3]:
        assert not p.step(ids("A", "\n\n", "B"), None, token_signals=reads(None, None, v, None)).exit
    assert p.smoothed()["confidence"] == pytest.approx(0.65)  # 0.6, 0.3, 0.65
    assert p.step(ids("A", "\n\n", "B"), None, token_signals=reads(None, None, rd[3], None)).exit  # 0.825


def test_boundary_readout_keeps_min_tokens_budget_and_max_keep():
    p = make_policy({"confidence": 0.8}, readout="boundary", min_thinking_tokens=3)
    good = {"confidence": 0.99}
    assert not p.step(ids("A", "\n\n"), None, token_signals=reads(None, None, good)).exit  # 2 < min
    assert p.step(ids("B", "\n\n"), None, token_signals=reads(None, None, good)).keep == 2
    q = make_policy({"confidence": 0.8}, readout="boundary")
    assert not q.step(ids("A", "\n\n", "B"), None, max_keep=1, token_signals=reads(None, None, good, None)).exit
    b = make_policy({"confidence": 0.8}, readout="boundary", thinking_budget=2)
    d = b.step(ids("A", "B", "C"), None, token_signals=None)
    assert d.keep == 2 and b.record.boundary == "budget"


def test_boundary_readout_disabled_and_after_the_end():
    p = make_policy({"confidence": 0.8}, readout="boundary", enabled=False)
    assert not p.step(ids("A", "\n\n", "B"), None, token_signals=reads(None, None, {"confidence": 1.0}, None)).exit
    q = make_policy({"confidence": 0.8}, readout="boundary")
    assert not q.step(ids("A", "</think>", "\n\n", "B"), None, token_signals=[{"confidence": 1.0}] * 5).exit
    assert q.finished and q.thinking_tokens == 1


def test_readout_is_validated():
    with pytest.raises(ConfigError, match="readout must be one of"):
        ExitConfig(readout="token").validate()


# agreement: trial answers confirm the signal rule's exits


class ScriptedJudge:
    """Answers the boundaries it is asked about from a script; counts answers like probe.AgreementJudge."""

    def __init__(self, answers, agree):
        self.answers, self.agree, self.asked, self.counts = list(answers), agree, [], {}

    def __call__(self, keep):
        self.asked.append(keep)
        a = self.answers.pop(0)
        if a is None:
            return False, 0.0
        self.counts[a] = self.counts.get(a, 0) + 1
        return self.counts[a] >= self.agree, float(self.counts[a])


def agreeing_policy(answers, agree=2, **cfg):
    config = ExitConfig(thresholds={"confidence": 0.5}, smoothing="none", readout="boundary", agree=agree, **cfg)
    judge = ScriptedJudge(answers, agree)
    p = ExitPolicy(config, BoundaryDetector(VOCAB.__getitem__), THINK, END, judge=judge)
    p.start([THINK])
    return p, judge


def test_agreement_asks_only_where_the_signal_rule_passes_and_exits_on_the_kth_answer():
    p, judge = agreeing_policy(["6", "30", "30"])
    toks = ids("A", "\n\n", "B", "\n\n", "C", "\n\n", "D", "\n\n")
    conf = [0.9, 0.1, 0.9, 0.9]  # the second boundary fails the signal rule: no trial answer there
    r = [None, None, {"confidence": conf[0]}, None, {"confidence": conf[1]}, None, {"confidence": conf[2]}, None,
         {"confidence": conf[3]}]  # fmt: skip
    d = p.step(toks, None, token_signals=r)
    assert judge.asked == [2, 6, 8] and p.judge_calls == 3
    assert d.exit and d.keep == 8 and p.record.raw == {"confidence": 0.9, "agree": 2.0}
    assert [raw for _, raw, _ in p.history][-1] == {"confidence": 0.9}  # the history keeps the signals only


def test_agreement_without_a_judge_is_refused_up_front():
    config = ExitConfig(thresholds={"confidence": 0.5}, readout="boundary", agree=2)
    with pytest.raises(ConfigError, match="torch backend"):
        ExitPolicy(config, BoundaryDetector(VOCAB.__getitem__), THINK, END)
    ExitPolicy(config, BoundaryDetector(VOCAB.__getitem__), THINK, END, enabled=False)  # spec mode: no rule runs
    with pytest.raises(ConfigError, match="agree must be"):
        ExitConfig(agree=-1).validate()
