"""specexit.calibration.risk: the binomial tail, the two p-values, fixed-sequence testing, and the guarantee
itself, checked by simulating many calibrations against rule families whose true losses are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binom

from specexit.calibration.risk import (
    BET_FRACTION,
    LOSSES,
    Certified,
    binom_cdf,
    certify,
    fixed_sequence,
    harm_upper_bound,
    net_pvalues,
    pvalue,
)
from specexit.errors import ConfigError

EPS, DELTA, N_PROBLEMS, N_CALIBRATIONS = 0.02, 0.1, 600, 1000


def noise_limit(rate: float, trials: int) -> float:
    """The largest frequency still consistent with ``rate``: rate + 3 binomial standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / trials)


# --- the binomial tail ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 50, 600, 5000])
@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.003, 0.02, 0.3, 0.5, 0.81, 0.999, 1 - 1e-9])
def test_binom_cdf_matches_scipy_on_a_grid(n, p):
    ks = sorted({0, 1, n // 3, int(n * p) - 1, int(n * p), int(n * p) + 1, n - 1, n} - {-1})
    for k in ks:
        want = binom.cdf(k, n, p)
        assert binom_cdf(k, n, p) == pytest.approx(want, rel=1e-9, abs=1e-300), (k, n, p)


def test_binom_cdf_is_stable_for_large_n():
    n = 100_000
    for p, k in [(0.01, 900), (0.01, 1000), (0.01, 1100), (0.5, 50_000), (1e-5, 0), (0.3, 29_000)]:
        assert binom_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-8, abs=1e-300), (k, p)


def test_binom_cdf_edges():
    assert binom_cdf(-1, 10, 0.3) == 0.0
    assert binom_cdf(10, 10, 0.3) == binom_cdf(12, 10, 0.3) == 1.0
    assert binom_cdf(0, 10, 0.0) == 1.0 and binom_cdf(9, 10, 1.0) == 0.0 and binom_cdf(10, 10, 1.0) == 1.0
    assert binom_cdf(0, 0, 0.4) == 1.0
    for bad in [dict(k=1, n=10, p=1.5), dict(k=1, n=-1, p=0.5), dict(k=1.5, n=10, p=0.5)]:
        with pytest.raises(ConfigError):
            binom_cdf(**bad)


# --- the reporting bound -------------------------------------------------------------------------
@pytest.mark.parametrize("n, k, delta", [(600, 0, 0.1), (600, 7, 0.05), (50, 12, 0.1), (1000, 999, 0.01)])
def test_harm_upper_bound_is_the_clopper_pearson_bound(n, k, delta):
    bound = harm_upper_bound(k, n, delta)
    assert bound == pytest.approx(beta.ppf(1 - delta, k + 1, n - k), rel=1e-9)
    assert binom_cdf(k, n, bound) <= delta <= binom_cdf(k, n, bound * (1 - 1e-9))  # the largest such p
    assert harm_upper_bound(n, n, delta) == 1.0


@pytest.mark.parametrize("n, rate, delta", [(600, 0.02, 0.1), (80, 0.15, 0.05)])
def test_harm_upper_bound_covers_the_true_rate(n, rate, delta):
    draws = 4000
    ks = np.random.default_rng(7).binomial(n, rate, size=draws)
    bounds = {k: harm_upper_bound(int(k), n, delta) for k in np.unique(ks)}
    misses = np.mean([bounds[k] < rate for k in ks])
    assert misses <= noise_limit(delta, draws), misses


# --- p-values ------------------------------------------------------------------------------------
def reference_net_pvalue(losses, eps, delta, order):
    """The betting p-value written as the plain loop of Waudby-Smith & Ramdas: each bet sees only the past."""
    n, m0 = len(losses), (eps + 1) / 2
    total, sq, var, log_k, best = 0.0, 0.0, 0.25, 0.0, 0.0
    for t, i in enumerate(order, start=1):
        x = (losses[i] + 1) / 2
        lam = min(BET_FRACTION / (1 - m0), math.sqrt(2 * math.log(1 / delta) / (n * var)))  # var from x_1..x_{t-1}
        log_k += math.log(1 + lam * (m0 - x))
        best = max(best, log_k)
        total += x
        mean = (0.5 + total) / (t + 1)
        sq += (x - mean) ** 2
        var = (0.25 + sq) / (t + 1)
    return min(1.0, math.exp(-best))


def test_net_pvalue_matches_a_plain_loop_reference():
    import random

    rng = np.random.default_rng(3)
    full = rng.random(300) < 0.6
    exit_ = np.where(rng.random(300) < 0.05, ~full, full)
    losses = full.astype(int) - exit_.astype(int)
    for seed in (0, 5):
        order = list(range(300))
        random.Random(seed).shuffle(order)
        want = reference_net_pvalue(losses.tolist(), EPS, DELTA, order)
        assert pvalue(full, exit_, EPS, DELTA, "net", seed=seed) == pytest.approx(want, rel=1e-10)


def test_pvalue_is_deterministic_for_a_seed():
    rng = np.random.default_rng(11)
    full = (rng.random(400) < 0.6).tolist()
    exit_ = [f if u > 0.04 else not f for f, u in zip(full, rng.random(400), strict=True)]
    for loss in LOSSES:
        assert pvalue(full, exit_, EPS, DELTA, loss, seed=4) == pvalue(full, exit_, EPS, DELTA, loss, seed=4)
    # the betting p-value depends on the order (through the running bets), the binomial one does not
    nets = {pvalue(full, exit_, EPS, DELTA, "net", seed=s) for s in range(5)}
    assert len(nets) > 1
    assert len({pvalue(full, exit_, EPS, DELTA, "harm", seed=s) for s in range(5)}) == 1


def test_harm_counts_only_harms():
    full = [True] * 10 + [False] * 90
    exit_ = [False] * 3 + [True] * 7 + [True] * 90  # 3 harms, 90 fixes
    assert pvalue(full, exit_, 0.05, DELTA, "harm") == pytest.approx(binom.cdf(3, 100, 0.05), rel=1e-12)
    assert pvalue(full, exit_, 0.05, DELTA, "net") < 1e-6  # the fixes count for the net loss


def test_net_exact_certifies_a_rule_that_changes_nothing_where_betting_alone_cannot():
    """300 problems, no answer changed, 1 point: the exact harm test gives 2 x 0.99^300 = 0.098 <= 0.1;
    the betting p-value needs about 320 problems for that."""
    full = [True] * 150 + [False] * 150
    assert pvalue(full, full, 0.01, DELTA, "net-exact") == pytest.approx(2 * 0.99**300, rel=1e-9)
    assert pvalue(full, full, 0.01, DELTA, "net") > DELTA
    # and where exits fix as many answers as they break, the betting half carries it (doubled)
    full = [True] * 200 + [False] * 200
    exit_ = [False] * 20 + [True] * 180 + [True] * 20 + [False] * 180  # 20 harms, 20 fixes
    net = pvalue(full, exit_, 0.05, DELTA, "net")
    assert pvalue(full, exit_, 0.05, DELTA, "net-exact") == pytest.approx(2 * net) and 2 * net <= DELTA
    assert pvalue(full, exit_, 0.05, DELTA, "harm") > DELTA


def test_each_pvalue_is_valid_at_the_null_boundary():
    # harm: P(p <= delta) under a harm rate of exactly eps, computed exactly over all counts
    ks = np.arange(N_PROBLEMS + 1)
    rejects = np.array([binom_cdf(int(k), N_PROBLEMS, EPS) <= DELTA for k in ks])
    assert binom.pmf(ks, N_PROBLEMS, EPS)[rejects].sum() <= DELTA
    # net: simulated, for several ways of making a net loss of exactly eps
    rows = 4000
    rng = np.random.default_rng(5)
    for harm, fix in [(EPS, 0.0), (0.06, 0.06 - EPS), (0.3, 0.3 - EPS)]:
        u = rng.random((rows, N_PROBLEMS))
        losses = np.where(u < harm, 1.0, np.where(u > 1 - fix, -1.0, 0.0))
        rate = np.mean(net_pvalues(losses, EPS, DELTA, seed=1) <= DELTA)
        assert rate <= noise_limit(DELTA, rows), (harm, fix, rate)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=1.0), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.5), "delta"),
        (dict(loss="mse"), "loss"),
        (dict(full_right=[], exit_right=[]), "full_right"),
        (dict(exit_right=[True, False]), "exit_right"),
        (dict(exit_right=[True, False, 2]), "exit_right"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, name):
    args = dict(full_right=[True, True, False], exit_right=[True, False, False], eps=EPS, delta=DELTA, loss="net")
    args.update(kwargs)
    with pytest.raises(ConfigError, match=name):
        pvalue(**args)


def test_certify_rejects_mismatched_inputs():
    full, rule = [True, False, True], [True, True, True]
    with pytest.raises(ConfigError, match="cuts"):
        certify(full, [rule, rule], [0.1], EPS, DELTA)
    with pytest.raises(ConfigError, match=r"exit_right_per_rule\[1\]"):
        certify(full, [rule, rule[:2]], [0.1, 0.2], EPS, DELTA)
    with pytest.raises(ConfigError, match="exit_right_per_rule"):
        certify(full, [], [], EPS, DELTA)
    with pytest.raises(ConfigError, match="full_right"):
        certify([], [[]], [0.1], EPS, DELTA)
    with pytest.raises(ConfigError, match="loss"):
        certify(full, [rule], [0.1], EPS, DELTA, loss="abs")
    with pytest.raises(ConfigError, match="delta"):
        fixed_sequence([0.01], 1.0)
    with pytest.raises(ConfigError, match="cuts"):
        fixed_sequence([0.01, 0.02], DELTA, cuts=[0.1])


# --- fixed-sequence testing ----------------------------------------------------------------------
def test_fixed_sequence_stops_at_the_first_failure():
    got = fixed_sequence([0.01, 0.05, 0.2, 0.001, 0.001], DELTA, cuts=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert got == Certified(chosen=1, accepted=(0, 1), pvalues=(0.01, 0.05, 0.2))  # 3 and 4 untested
    assert fixed_sequence([0.5, 0.001], DELTA) == Certified(None, (), (0.5,))
    assert fixed_sequence([0.1, 0.1], DELTA) == Certified(1, (0, 1), (0.1, 0.1))  # p == delta is accepted


def test_fixed_sequence_picks_the_largest_cut_among_the_accepted():
    pvals = [0.01, 0.02, 0.03, 0.5]
    assert fixed_sequence(pvals, DELTA, cuts=[0.1, 0.5, 0.3, 0.9]).chosen == 1  # 0.9 is not accepted
    assert fixed_sequence(pvals, DELTA).chosen == 2  # without cuts: the last accepted
    assert fixed_sequence(pvals, DELTA, cuts=[0.1, 0.5, 0.5, 0.9]).chosen == 1  # a tie goes to the cautious one


def test_certify_tests_lazily_and_reports_only_tested_rules():
    n = 600
    full = [True] * n
    safe, harmful = [True] * n, [False] * 30 + [True] * (n - 30)  # 0% and 5% harm
    got = certify(full, [safe, safe, harmful, safe], [0.1, 0.2, 0.3, 0.4], EPS, DELTA, loss="harm")
    assert got.accepted == (0, 1) and got.chosen == 1 and len(got.pvalues) == 3
    assert got.pvalues[2] > DELTA >= max(got.pvalues[:2])


# --- the guarantee, by simulation ----------------------------------------------------------------
def draw(rng: np.random.Generator, harm: np.ndarray, fix: np.ndarray, right: float = 0.6):
    """One calibration set: full-thinking outcomes and, per rule, the outcome after its exit, with
    P(harm) = harm[j] and P(fix) = fix[j].  One uniform per problem drives all rules, so a more
    aggressive rule harms (and fixes) a superset of the problems a cautious one does, as real cuts do."""
    full = rng.random(N_PROBLEMS) < right
    v = rng.random(N_PROBLEMS)
    harmed = full & (v < harm[:, None] / right)
    fixed = ~full & (v < fix[:, None] / (1 - right))
    return full, np.where(full, ~harmed, fixed)


def true_loss(loss: str, harm: np.ndarray, fix: np.ndarray) -> np.ndarray:
    return harm if loss == "harm" else harm - fix


J = np.arange(10)
CUTS = 0.05 * (J + 1)  # the fraction of thinking a rule cuts, growing with its aggressiveness
# net loss crosses eps between rules 7 (0.019) and 8 (0.023): harms and fixes both grow
FAMILIES_NET_CROSSING = (0.02 + 0.004 * J + np.array([-9, -5, -1, 3, 7, 11, 15, 19, 23, 27]) / 1000, 0.02 + 0.004 * J)
FAMILIES = {
    ("net", "crossing"): FAMILIES_NET_CROSSING,
    # every rule is just above eps: any acceptance is a violation, so this probes the first p-value's validity
    ("net", "boundary"): (0.041 + 0.01 * J, 0.02 + 0.01 * J),
    # harm crosses eps between rules 4 (0.019) and 5 (0.023); the fixes do not count
    ("harm", "crossing"): ((3 + 4 * J) / 1000, (1 + 2 * J) / 1000),
    ("harm", "boundary"): (0.021 + 0.004 * J, np.zeros(10)),
    # the net loss by the better of the two tests: the net families, and one without fixes, where the
    # exact harm test is the sharper one and so the one whose validity is probed
    ("net-exact", "crossing"): FAMILIES_NET_CROSSING,
    ("net-exact", "boundary"): (0.041 + 0.01 * J, 0.02 + 0.01 * J),
    ("net-exact", "no fixes"): (0.021 + 0.004 * J, np.zeros(10)),
}


@pytest.mark.parametrize("loss, family", list(FAMILIES))
def test_the_chosen_rule_violates_eps_at_most_delta_of_the_time(loss, family):
    harm, fix = FAMILIES[loss, family]
    truth = true_loss(loss, harm, fix)
    assert truth.max() > EPS + 1e-9 and np.all(np.abs(truth - EPS) > 5e-4)  # no rule sits on the boundary
    rng = np.random.default_rng(2024)
    violations = naive_violations = 0
    for i in range(N_CALIBRATIONS):
        full, exits = draw(rng, harm, fix)
        got = certify(full, exits, CUTS, EPS, DELTA, loss=loss, seed=i)
        violations += got.chosen is not None and truth[got.chosen] > EPS
        # the plug-in rule (largest cut whose empirical loss <= eps): what the test must be able to catch
        diff = full.astype(int) - exits.astype(int)
        empirical = (np.maximum(diff, 0) if loss == "harm" else diff).mean(axis=1)
        ok = np.flatnonzero(empirical <= EPS)
        naive_violations += ok.size > 0 and truth[ok.max()] > EPS
    rate = violations / N_CALIBRATIONS
    print(f"{loss}/{family}: violation frequency {rate:.3f}, plug-in {naive_violations / N_CALIBRATIONS:.3f}")
    assert rate <= noise_limit(DELTA, N_CALIBRATIONS), rate
    assert naive_violations / N_CALIBRATIONS > noise_limit(DELTA, N_CALIBRATIONS)  # the simulation has teeth


@pytest.mark.parametrize("loss", LOSSES)
def test_the_procedure_cuts_more_than_the_most_cautious_rule_when_it_safely_can(loss):
    # rules 1 and 2 cut 2-3x more than rule 0 at a quarter of the risk budget or less (net loss 0.005,
    # harm rate 0.006 / 0.008); rule 3 is still safe for the net loss (0.01) but not for harm (0.03)
    harm = np.array([0.0, 0.006, 0.008, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15])
    fix = np.array([0.0, 0.001, 0.003, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02])
    rng = np.random.default_rng(99)
    beyond = 0
    for i in range(N_CALIBRATIONS):
        full, exits = draw(rng, harm, fix)
        got = certify(full, exits, CUTS, EPS, DELTA, loss=loss, seed=i)
        beyond += got.chosen is not None and got.chosen > 0
    rate = beyond / N_CALIBRATIONS
    print(f"{loss}: beyond the most cautious rule in {rate:.3f} of calibrations")
    assert rate >= 0.8, rate
