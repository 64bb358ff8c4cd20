"""Certify the accuracy risk of exit rules: Learn-then-Test with fixed-sequence testing.

The user gives an accuracy risk ``eps`` (0.01 = one point) and an error level ``delta``.  Candidate
exit rules come ordered from cautious to aggressive; for each rule j the null hypothesis is
H_j: "risk_j > eps", tested with a p-value computed on n i.i.d. calibration problems.  The rules are
walked in the given order and accepted while p_j <= delta; the walk stops at the first p_j > delta.
Every accepted rule then has risk <= eps, all of them at once, with probability >= 1 - delta
(fixed-sequence testing controls the family-wise error without a multiplicity correction:
Angelopoulos, Bates, Candès, Jordan, Lei 2021, "Learn then Test", arXiv 2110.01052).  Among the
accepted rules the one with the largest thinking cut is chosen.

Per problem i and rule j the data are paired outcomes full_right_i and exit_right_ij, and the loss is
either ``"net"``: full_right - exit_right in {-1, 0, 1} (its mean is the accuracy loss; exits can also
fix answers), or ``"harm"``: max(0, full_right - exit_right) in {0, 1} (its mean bounds the accuracy
loss from above, so certifying it certifies the loss too; an exact binomial test is then possible).
``"net-exact"`` certifies the net loss with the smaller of its two valid p-values, doubled (Bonferroni):
the betting one, sharp where exits fix about as many answers as they break, and the exact binomial one
of the harm count, sharp where a cautious rule harms (almost) nobody, where betting needs far more
problems (see pvalue).
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

LOSSES = ("net", "harm", "net-exact")

# c of the betting strategy: a bet risks at most 3/4 of the capital, so one adverse outcome never
# wipes the capital out and log-capital stays finite (Waudby-Smith & Ramdas suggest c in [1/2, 3/4])
BET_FRACTION = 0.75
# the tail sums stop when what is left is below this fraction of what was summed (double precision)
_TAIL_TOL = 1e-17


# --- checks ------------------------------------------------------------------------------------
def _check_open_unit(name: str, value: float) -> float:
    """A number strictly inside (0, 1): eps and delta at 0 or 1 make the test meaningless."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0:  # also rejects NaN
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
    return v


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")


def _check_int(name: str, value: int) -> int:
    try:
        return operator.index(value)  # accepts numpy integers, refuses 2.5 rather than truncating it
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _bits(name: str, values: Sequence[bool]) -> np.ndarray:
    """A 1-D int8 array of 0/1 outcomes; anything else is a caller's mistake, not a loss of 2."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D sequence of booleans, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not (arr.size == 0 or np.isin(arr, (0, 1)).all()):
        raise ConfigError(f"{name} must hold booleans (or 0/1) only")
    return arr.astype(np.int8)


def _full(full_right: Sequence[bool]) -> np.ndarray:
    full = _bits("full_right", full_right)
    if full.size == 0:
        raise ConfigError("full_right is empty: n == 0 calibration problems certify nothing")
    return full


def _exits(full: np.ndarray, exit_right: Sequence[bool], name: str) -> np.ndarray:
    ex = _bits(name, exit_right)
    if ex.size != full.size:
        raise ConfigError(f"{name} has {ex.size} outcomes but full_right has {full.size}: they must be paired")
    return ex


def _order(n: int, seed: int) -> list[int]:
    """The fixed testing order: a permutation drawn from the seed alone (independent of the outcomes,
    so the permuted problems stay i.i.d.); random.Random's shuffle is stable across Python versions."""
    perm = list(range(n))
    random.Random(_check_int("seed", seed)).shuffle(perm)
    return perm


# --- the binomial tail -------------------------------------------------------------------------
def _log_pmf(j: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k), in pure Python and stable for n up to 1e5 and beyond.

    It sums the smaller tail only, starting at the pmf nearest the mode (from lgamma) and walking away
    from it with the pmf ratio, so every term is a product of ratios < 1 (no overflow, no cancellation):
    the lower tail when k <= np (its terms shrink going down), else 1 - the upper tail (then the cdf
    is >= 1/2, so the subtraction loses nothing).  A walk stops once the rest is provably negligible.
    """
    k, n = _check_int("k", k), _check_int("n", n)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p must be in [0, 1], got {p!r}")
    if k < 0:
        return 0.0
    if k >= n or p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0  # all n successes, and k < n
    q = 1.0 - p
    total = term = 1.0  # sums relative to the first term, scaled by its pmf at the end
    if k <= n * p:
        # pmf(j-1)/pmf(j) = j q / ((n-j+1) p): below 1 for j <= np and falling as j falls
        for j in range(k, 0, -1):
            r = j * q / ((n - j + 1) * p)
            term *= r
            total += term
            if term * r / (1.0 - r) < _TAIL_TOL * total:  # geometric bound on everything below
                break
        return min(1.0, math.exp(_log_pmf(k, n, p)) * total)
    # upper tail from k+1 > np: pmf(j+1)/pmf(j) = (n-j) p / ((j+1) q), below 1 and falling as j rises
    for j in range(k + 1, n):
        r = (n - j) * p / ((j + 1) * q)
        term *= r
        total += term
        if term * r / (1.0 - r) < _TAIL_TOL * total:
            break
    return max(0.0, 1.0 - math.exp(_log_pmf(k + 1, n, p)) * total)


def harm_upper_bound(k: int, n: int, delta: float) -> float:
    """Clopper-Pearson upper bound on a harm rate: the largest p with P(Bin(n, p) <= k) >= delta.

    Valid at level 1 - delta: the true rate r exceeds the bound only if k is at most the delta-quantile
    of Bin(n, r), which happens with probability <= delta.  Found by bisection (the cdf falls as p rises);
    the bracket's upper end is returned, so rounding errs on the safe (larger) side.
    """
    delta = _check_open_unit("delta", delta)
    k, n = _check_int("k", k), _check_int("n", n)
    if n <= 0:
        raise ConfigError(f"n must be >= 1 calibration problems, got {n}")
    if not 0 <= k <= n:
        raise ConfigError(f"k must be in [0, n={n}], got {k}")
    if k == n:
        return 1.0
    lo, hi = 0.0, 1.0  # cdf(lo) = 1 >= delta, cdf(hi) = 0 < delta
    for _ in range(64):  # 2**-64: far below any reported precision
        mid = 0.5 * (lo + hi)
        if binom_cdf(k, n, mid) >= delta:
            lo = mid
        else:
            hi = mid
    return hi


# --- p-values ----------------------------------------------------------------------------------
def harm_pvalue(k: int, n: int, eps: float) -> float:
    """p-value for H: harm rate >= eps after k harms in n problems: P(Bin(n, eps) <= k).

    Why valid: under H the harm count K ~ Bin(n, r) with r >= eps is stochastically larger than
    Bin(n, eps), and the cdf F_eps is increasing in k, so P_r(F_eps(K) <= u) <= P_eps(F_eps(K) <= u) <= u
    (a discrete variable's own cdf is super-uniform).  Exact binomial test; the exact form, for 0/1
    losses, of Learn then Test's binomial-tail p-value (arXiv 2110.01052).
    """
    return binom_cdf(k, n, _check_open_unit("eps", eps))


def net_pvalues(losses: np.ndarray, eps: float, delta: float, seed: int = 0) -> np.ndarray:
    """Betting p-values for H: E[loss] >= eps, one per row of ``losses`` (shape (..., n), values in [-1, 1]).

    Why valid (Waudby-Smith & Ramdas 2020, "Estimating means of bounded random variables by betting",
    arXiv 2010.09686): with x = (loss + 1)/2 in [0, 1] and m0 = (eps + 1)/2, the capital
    K_t = prod_{s<=t} (1 + lam_s (m0 - x_s)) with lam_s in [0, c/(1 - m0)], c < 1, chosen from x_1..x_{s-1}
    only, stays positive and under H (E[x] >= m0) has E[K_t | past] <= K_{t-1}: a nonnegative
    supermartingale with K_0 = 1.  Ville's inequality gives P(max_t K_t >= 1/delta) <= delta, so
    p = min(1, 1/max_t K_t) is a valid p-value.  Rows share one seeded order of the problems.

    lam_s is WSR's predictable plug-in for a fixed n: min(c/(1-m0), sqrt(2 log(1/delta) / (n var_{s-1}))),
    var a regularized running variance; delta only tunes the bets (validity holds for any predictable lam).
    """
    eps = _check_open_unit("eps", eps)
    delta = _check_open_unit("delta", delta)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim == 0 or losses.shape[-1] == 0:
        raise ConfigError("losses is empty: n == 0 calibration problems certify nothing")
    if not (np.isfinite(losses).all() and (np.abs(losses) <= 1.0).all()):
        raise ConfigError("losses must lie in [-1, 1]")
    n = losses.shape[-1]
    x = (losses[..., _order(n, seed)] + 1.0) / 2.0
    m0 = (eps + 1.0) / 2.0
    t = np.arange(1, n + 1, dtype=np.float64)
    mean = (0.5 + np.cumsum(x, axis=-1)) / (t + 1.0)  # mu_t from x_1..x_t, shrunk towards 1/2
    var = (0.25 + np.cumsum((x - mean) ** 2, axis=-1)) / (t + 1.0)  # var_t, never 0 (no infinite bet)
    # bet s may use var_{s-1} only (var_0 = 1/4): this shift is what makes lam predictable
    var_before = np.concatenate([np.full((*x.shape[:-1], 1), 0.25), var[..., :-1]], axis=-1)
    lam = np.minimum(BET_FRACTION / (1.0 - m0), np.sqrt(2.0 * math.log(1.0 / delta) / (n * var_before)))
    # each factor >= 1 - BET_FRACTION > 0, so the log is finite; log space avoids under/overflow
    log_capital = np.cumsum(np.log1p(lam * (m0 - x)), axis=-1)
    return np.exp(-np.maximum(0.0, log_capital.max(axis=-1)))  # max includes K_0 = 1, so p <= 1


def _pvalue_bits(full: np.ndarray, ex: np.ndarray, eps: float, delta: float, loss: str, seed: int) -> float:
    harm = harm_pvalue(int(np.maximum(0, full - ex).sum()), full.size, eps) if loss != "net" else 1.0
    if loss == "harm":
        return harm
    net = float(net_pvalues((full - ex).astype(np.float64), eps, delta, seed))
    return net if loss == "net" else min(1.0, 2.0 * min(net, harm))


def pvalue(
    full_right: Sequence[bool],
    exit_right: Sequence[bool],
    eps: float,
    delta: float,
    loss: str = "net",
    seed: int = 0,
) -> float:
    """A valid p-value for H: "the rule's risk exceeds eps" from paired outcomes on n problems.

    ``"harm"``: the exact binomial tail of the harm count (see harm_pvalue); ``"net"``: the betting
    p-value (see net_pvalues), the problems taken in the order fixed by ``seed``, so the result is
    deterministic.  ``"net-exact"``: H is still "net risk > eps", tested by min(1, 2 min(p_net, p_harm)).
    Why valid: net loss <= harm problem by problem (an exit that fixes an answer only lowers the net
    loss), so under H the harm rate exceeds eps too and p_harm is valid for H as well as p_net; the
    Bonferroni combination of two valid p-values for one null is valid (P(min <= u/2) <= u/2 + u/2).
    It needs about ln(2/delta)/eps problems with no harm (1 point at delta = 0.1: 299), where
    betting needs many more for a rule that changes nothing.  Small p-values are evidence that the
    rule's risk is at most eps.
    """
    eps = _check_open_unit("eps", eps)
    delta = _check_open_unit("delta", delta)
    _check_loss(loss)
    full = _full(full_right)
    ex = _exits(full, exit_right, "exit_right")
    return _pvalue_bits(full, ex, eps, delta, loss, seed)


# --- fixed-sequence testing --------------------------------------------------------------------
@dataclass(frozen=True)
class Certified:
    """The outcome of a calibration.

    chosen: index of the chosen rule in the given order, None if none was certified.
    accepted: the indices that passed the fixed sequence, in order (a prefix 0..m-1).
    pvalues: one per rule tested, i.e. up to and including the first failure (later rules untested).
    """

    chosen: int | None
    accepted: tuple[int, ...]
    pvalues: tuple[float, ...]


def fixed_sequence(pvals: Sequence[float], delta: float, cuts: Sequence[float] | None = None) -> Certified:
    """Fixed-sequence testing at level delta: accept rules in order while p <= delta, stop at the first p > delta.

    Why valid (Learn then Test, arXiv 2110.01052, after Bauer 1991): let j0 be the first rule whose null
    is true.  Any false acceptance needs rule j0 accepted, i.e. p_{j0} <= delta, which has probability
    <= delta; so the family-wise error is <= delta with no multiplicity correction, as the order is
    fixed before seeing the data.  Among the accepted rules the one with the largest cut is chosen
    (ties go to the earlier, more cautious rule); without cuts, the last accepted.
    """
    delta = _check_open_unit("delta", delta)
    pvals = [float(p) for p in pvals]
    if any(not 0.0 <= p <= 1.0 for p in pvals):  # also catches NaN
        raise ConfigError("pvals must be p-values in [0, 1]")
    if cuts is not None:
        cuts = [float(c) for c in cuts]
        if len(cuts) != len(pvals):
            raise ConfigError(f"cuts has {len(cuts)} entries but there are {len(pvals)} p-values: one cut per rule")
        if not all(math.isfinite(c) for c in cuts):
            raise ConfigError("cuts must be finite numbers")
    accepted: list[int] = []
    for j, p in enumerate(pvals):
        if p > delta:
            break  # the sequence stops here: later rules are not tested, whatever their p-value
        accepted.append(j)
    tested = tuple(pvals[: len(accepted) + 1])
    if not accepted:
        return Certified(None, (), tested)
    # max() returns the first of equal cuts: the most cautious rule among equally fast ones
    chosen = accepted[-1] if cuts is None else max(accepted, key=lambda j: cuts[j])
    return Certified(chosen, tuple(accepted), tested)


def certify(
    full_right: Sequence[bool],
    exit_right_per_rule: Sequence[Sequence[bool]],
    cuts: Sequence[float],
    eps: float,
    delta: float,
    loss: str = "net",
    seed: int = 0,
) -> Certified:
    """Learn then Test over exit rules ordered cautious -> aggressive: the rule with the largest certified cut.

    With probability >= 1 - delta over the n i.i.d. calibration problems, every accepted rule (the chosen
    one included) has risk <= eps: each p-value is valid for its null (see pvalue) and fixed-sequence
    testing controls the family-wise error (see fixed_sequence).  P-values are computed lazily, in order,
    only up to the first failure; all rules share the seeded problem order.
    """
    eps = _check_open_unit("eps", eps)
    delta = _check_open_unit("delta", delta)
    _check_loss(loss)
    rules = list(exit_right_per_rule)
    if not rules:
        raise ConfigError("exit_right_per_rule is empty: give at least one exit rule")
    if len(cuts) != len(rules):
        raise ConfigError(f"cuts has {len(cuts)} entries but there are {len(rules)} rules: one cut per rule")
    # check every rule up front: a malformed aggressive rule should not pass unnoticed because
    # the sequence happened to stop before it
    full = _full(full_right)
    exits = [_exits(full, ex, f"exit_right_per_rule[{j}]") for j, ex in enumerate(rules)]
    pvals: list[float] = []
    for ex in exits:
        pvals.append(_pvalue_bits(full, ex, eps, delta, loss, seed))
        if pvals[-1] > delta:
            break
    return fixed_sequence(pvals, delta, list(cuts)[: len(pvals)])
