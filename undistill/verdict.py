"""The verdict: does a student distilled from a teacher beat the label-smoothing (LS) student, beyond the seeds' noise?

Per attack, the paired differences d_s = acc(attack, seed s) - acc(LS, seed s) (the same seed: the same data share
and initialization) give a mean, a standard deviation and a 95% t-interval, mean +- t(0.975, n - 1) std / sqrt(n).
Three outcomes: **cloned** (the interval lies above 0), **undistillable** (at or below 0) and **inconclusive** (it
straddles 0). One seed has no interval: its sign is only **indicative**.

A release is judged over all its attacks. It is cloned when the strongest attack's interval, widened for taking the
best of m attacks (Bonferroni: level 1 - 0.05 / m, the first step of Holm's procedure, so the same decision), lies
above 0; undistillable when every attack's own interval lies at or below 0 (an intersection-union test: each at
95%, no widening needed); inconclusive otherwise. Before any of this, the teacher must leave the attacker something
to gain: if its accuracy is not clearly above the LS students' (the interval of teacher - LS over the seeds reaches
0), the question is void there: the labels alone give the attacker as much.

The same command on two machines may thus move a verdict to or from inconclusive, but a cloned release cannot turn
undistillable without one of the two intervals being wrong, which each is with probability 5% at most.
"""
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

from . import require

LEVEL = 0.95
CLONED, UNDISTILLABLE, INCONCLUSIVE, INDICATIVE, VOID = "cloned", "undistillable", "inconclusive", "indicative", "void"


@dataclass(frozen=True)
class Interval:
    """Paired differences over seeds: their mean, std (None for one), count and `level` interval (None for one)."""
    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    level: float = LEVEL

    @property
    def outcome(self) -> str:
        if self.low is None:
            return INDICATIVE
        if self.low > 0:
            return CLONED
        if self.high <= 0:
            return UNDISTILLABLE
        return INCONCLUSIVE

    def text(self, digits: int = 2) -> str:
        """`+0.30 ± 0.20 [-0.20, +0.80]`, or `+0.30 (1 seed)`."""
        if self.low is None:
            return f"{self.mean:+.{digits}f} (1 seed)"
        return f"{self.mean:+.{digits}f} ± {self.std:.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def as_dict(self) -> dict:
        return dict(asdict(self), outcome=self.outcome)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Interval":
        """The interval `as_dict` wrote (a report read back)."""
        return cls(**{k: v for k, v in d.items() if k != "outcome"})


def t_quantile(p: float, df: float) -> float:
    return float(require("scipy.stats", "scipy", "the verdict's confidence intervals").t.ppf(p, df))


def interval(differences: Iterable[float], level: float = LEVEL) -> Interval:
    """The mean of the differences and its two-sided `level` t-interval (none for a single difference)."""
    d = list(differences)
    if not d:
        raise ValueError("no difference to judge")
    mean = statistics.fmean(d)
    if len(d) == 1:
        return Interval(mean, None, 1, None, None, level)
    std = statistics.stdev(d)
    half = t_quantile(1 - (1 - level) / 2, len(d) - 1) * std / math.sqrt(len(d))
    return Interval(mean, std, len(d), mean - half, mean + half, level)


def paired(values: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL) -> Interval | None:
    """The interval of value - baseline over the seeds both have (None if they share none)."""
    seeds = sorted(set(values) & set(baseline))
    return interval((values[s] - baseline[s] for s in seeds), level) if seeds else None


def unpaired(values: Iterable[float], baseline: Iterable[float], level: float = LEVEL) -> Interval | None:
    """The interval of mean(values) - mean(baseline) for runs that share no seed (Welch's t-interval); with a
    single run on either side, no interval."""
    a, b = list(values), list(baseline)
    if not a or not b:
        return None
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(mean, None, min(len(a), len(b)), None, None, level)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(mean, 0.0, min(len(a), len(b)), mean, mean, level)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = t_quantile(1 - (1 - level) / 2, df) * se
    return Interval(mean, se * math.sqrt(min(len(a), len(b))), min(len(a), len(b)), mean - half, mean + half, level)


def headroom(teacher_acc: float, ls: Mapping[int, float]) -> Interval | None:
    """teacher - LS over the LS students' seeds: is the teacher clearly better than the labels alone?"""
    return interval(teacher_acc - v for v in ls.values()) if ls else None


def has_headroom(room: Interval | None) -> bool | None:
    """False where the teacher is not clearly better than the LS student (void); None where unknown."""
    if room is None:
        return None
    return room.mean > 0 if room.low is None else room.low > 0


def widened(iv: Interval, level: float) -> Interval:
    """The same differences' interval at another level (a wider one for a family of attacks)."""
    if iv.low is None:
        return iv
    half = t_quantile(1 - (1 - level) / 2, iv.n - 1) * iv.std / math.sqrt(iv.n)
    return Interval(iv.mean, iv.std, iv.n, iv.mean - half, iv.mean + half, level)


def release_verdict(attacks: Mapping[str, Interval], level: float = LEVEL) -> dict:
    """A release's outcome over its attacks (name -> paired interval to the LS student), as a dict: `outcome`;
    `attack`, the attack the sentence names (the one that clones it, else the strongest: the largest mean) with its
    `interval` and `family_interval` (widened for the number of attacks); `counts` of the attacks' own outcomes."""
    if not attacks:
        return {"outcome": None, "attack": None, "attacks": 0}
    counts = {o: sum(iv.outcome == o for iv in attacks.values())
              for o in (CLONED, UNDISTILLABLE, INCONCLUSIVE, INDICATIVE)}
    family = {name: widened(iv, 1 - (1 - level) / len(attacks)) for name, iv in attacks.items()}
    if counts[INDICATIVE]:
        outcome, name = INDICATIVE, max(attacks, key=lambda a: attacks[a].mean)
    else:
        # the first step of Holm's procedure: the attack whose widened interval lies highest decides "cloned"
        name = max(family, key=lambda a: family[a].low)
        if family[name].low > 0:
            outcome = CLONED
        else:
            outcome = UNDISTILLABLE if counts[UNDISTILLABLE] == len(attacks) else INCONCLUSIVE
            name = max(attacks, key=lambda a: attacks[a].mean)
    return {"outcome": outcome, "attack": name, "interval": attacks[name].as_dict(),
            "family_interval": family[name].as_dict(), "attacks": len(attacks), "counts": counts}
