"""Findings: every candidate claim of a partition with its effect, interval, p, q and n; only the significant ones
are told as facts, strongest first.

A candidate is significant when (1) its Benjamini-Hochberg adjusted p-value over *everything tested in the
partition* (drivers, segments, changes, label mixes) is at most ``insights.fdr``, (2) its effect reaches
``insights.min_effect`` and (3) every group it compares has ``insights.min_group_rows`` rows (smaller groups are
not tested at all). Significant findings are ranked by the share of the target's variance they explain
(:mod:`lm_insights.core.statistics`), drivers with another held fixed after them (they qualify a driver), then
rule sets (they reproduce the model or the target; explain.rules measures them on held-out rows and their p-value
joins the family) and clusters last; a finding that is not significant keeps its figures and
a sentence that starts with "uncertain:". docs/findings.md says the same for users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lm_insights.core.statistics import Estimate, benjamini_hochberg

KINDS = ("driver", "segment", "change", "label_mix", "cluster", "rule")
FINDING_COLUMNS = ("partition_start", "kind", "subject", "target", "effect", "effect_measure", "ci_low", "ci_high",
                   "p_value", "q_value", "n", "significant", "rank", "sentence")
HEADLINE = 3  # significant findings the summary leads with
UNCERTAIN = "uncertain: "
PERCENT_MEASURES = ("relative difference of means", "proportion difference")


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str  # the field, "segment = value", "<set> mix" or "clusters"
    target: str
    estimate: Estimate
    claim: str  # plain words of the claim with its figures, without the "uncertain" prefix
    direction: str = ""  # a driver's: how the target moves as it grows, or its value with the highest target
    correlation: float | None = None  # a numeric driver's signed Pearson r
    about: str = ""  # the column a segment is cut by (its tiers' column, its label column); else the subject

    @property
    def family(self) -> str:
        """What the finding is about: a driver and the segments cut by the same column are one family."""
        return self.about or self.subject
    min_rows_met: bool = True  # every compared group has insights.min_group_rows rows
    tested: bool = True  # counted in the Benjamini-Hochberg family (a cluster's silhouette is a threshold)
    verdict: bool = True  # a rule set's own test (held-out, against the majority rule) must pass too
    q_value: float | None = None
    significant: bool = False
    rank: int | None = None

    @property
    def sentence(self) -> str:
        return self.claim if self.significant or self.kind == "cluster" else UNCERTAIN + self.claim


@dataclass(frozen=True)
class Thresholds:
    fdr: float = 0.05
    variance_share: float = 0.01
    relative_difference: float = 0.05
    proportion_difference: float = 0.05


def large_enough(estimate: Estimate, thresholds: Thresholds) -> bool:
    """Whether the effect reaches the minimum for its measure."""
    if estimate.effect_measure in ("relative difference of means", "difference of relative changes"):
        return abs(estimate.effect) >= thresholds.relative_difference
    if estimate.effect_measure == "proportion difference":
        return abs(estimate.effect) >= thresholds.proportion_difference
    return estimate.variance_share >= thresholds.variance_share


def controlled(finding: Finding) -> bool:
    """A driver measured with another held fixed: it qualifies a driver, and ranks after every plain finding."""
    return " | " in finding.subject


def decide(candidates: Sequence[Finding], thresholds: Thresholds) -> list[Finding]:
    """q-values over the tested candidates, the significant flag, and ranks 1.. among the significant ones.

    Ranks go by family (a driver with the segments cut by its column), strongest family first, the driver first
    within its family: "price explains 27%" comes before "units are 169% higher in price = [0, 150)", though the
    split explains more than the straight line, as both are about the price."""
    tested = [i for i, c in enumerate(candidates) if c.tested and c.min_rows_met]
    q_values = dict(zip(tested, benjamini_hochberg([candidates[i].estimate.p_value for i in tested])))
    decided = []
    for i, c in enumerate(candidates):
        q = q_values.get(i)
        if c.tested:
            significant = (q is not None and q <= thresholds.fdr and large_enough(c.estimate, thresholds)
                           and c.verdict)
        else:
            significant = c.significant
        decided.append(replace(c, q_value=q, significant=significant, rank=None))
    strongest: dict[str, float] = {}
    for f in decided:
        if f.significant:
            strongest[f.family] = max(strongest.get(f.family, 0.0), f.estimate.variance_share)

    def order_key(i: int):
        f = decided[i]
        return (f.kind in ("cluster", "rule"), f.kind == "cluster", controlled(f), -strongest[f.family], f.family,
                f.kind != "driver", -f.estimate.variance_share, f.estimate.p_value or 0.0, f.subject)

    order = sorted((i for i, f in enumerate(decided) if f.significant), key=order_key)
    for rank, i in enumerate(order, start=1):
        decided[i] = replace(decided[i], rank=rank)
    return decided


def finding_rows(partition_start, findings: Sequence[Finding]) -> list[tuple]:
    """Rows of staging ``findings`` in FINDING_COLUMNS' order, ranked ones first."""
    ordered = sorted(findings, key=lambda f: (f.rank is None, f.rank or 0, KINDS.index(f.kind), f.subject))
    return [(partition_start, f.kind, f.subject, f.target, f.estimate.effect, f.estimate.effect_measure,
             f.estimate.ci_low, f.estimate.ci_high, f.estimate.p_value, f.q_value, f.estimate.n, f.significant,
             f.rank, f.sentence) for f in ordered]


# ------------------------------------------------------------------------------------------------ plain words


def percent(value: float) -> str:
    return f"{value:.0%}"


def interval(estimate: Estimate, form=percent) -> str:
    return f"95% CI {form(estimate.ci_low)} to {form(estimate.ci_high)}"


def driver_claim(field: str, target: str, estimate: Estimate, direction: str) -> str:
    """"price explains 30% of the variance of units (95% CI 15% to 45%, n = 80); units falls as price rises."."""
    return (f"{field} explains {percent(estimate.effect)} of the variance of {target} ({interval(estimate)}, "
            f"n = {estimate.n}); {direction}.")


def difference_claim(what: str, where: str, estimate: Estimate, n_text: str) -> str:
    """"amount is 31% higher in region = north (95% CI 22% to 40%, n = 79 of 400)"."""
    if estimate.effect_measure == "relative difference of means":
        way = "higher" if estimate.effect >= 0 else "lower"
        return (f"{what} is {percent(abs(estimate.effect))} {way} {where} ({interval(estimate)}, {n_text}).")
    way = "higher" if estimate.effect >= 0 else "lower"
    return (f"{what} is {abs(estimate.effect):.3g} {way} {where} "
            f"({interval(estimate, lambda v: f'{v:.3g}')}, {n_text}).")


def segment_finding(segment: str, value: str, target: str, estimate: Estimate, n_group: int,
                    min_rows_met: bool) -> Finding:
    subject = f"{segment} = {value}"
    claim = difference_claim(target, f"in {subject} than in the other rows", estimate,
                             f"n = {n_group} of {estimate.n}")
    return Finding("segment", subject, target, estimate, claim, min_rows_met)


def headline(findings: Sequence[Finding], tested: int, fdr: float, min_group_rows: int) -> list[str]:
    """At most HEADLINE significant findings' sentences, strongest first; then whether anything else is larger
    than chance; "Nothing stands out" when nothing is."""
    ranked = sorted((f for f in findings if f.rank is not None), key=lambda f: f.rank)
    headlined, told = [], set()
    for f in ranked:  # one sentence per family: the others are details of the same column
        if f.family not in told and len(headlined) < HEADLINE:
            headlined.append(f)
            told.add(f.family)
    if not ranked and not tested:
        return [f"Nothing stands out: nothing had enough rows to be tested (groups need {min_group_rows} rows)."]
    if not ranked:
        return [f"Nothing stands out: none of the {tested} drivers, differences and changes tested is larger than "
                f"chance (false discovery rate {fdr:.0%})."]
    sentences = [f.sentence for f in headlined]  # they start with a field's name: its case is kept
    more = len(ranked) - len(headlined)
    if more > 0:
        sentences.append(f"{more} more significant {'finding is' if more == 1 else 'findings are'} in the findings "
                         "table.")
    else:
        sentences.append("No other difference is larger than chance.")
    return sentences


# ------------------------------------------------------------------------------------------------ candidates


def numeric_driver(field: str, target: str, r: float, n: int) -> Finding:
    """A numeric field against the target: r squared, Pearson's t test."""
    from lm_insights.core.statistics import correlation

    estimate = correlation(r, n)
    direction = f"{target} {'rises' if r > 0 else 'falls'} as {field} rises"
    claim = driver_claim(field, target, estimate, f"{direction} (r = {r:+.2f})")
    return Finding("driver", field, target, estimate, claim,
                   direction=direction, correlation=r)


def categorical_driver(field: str, target: str, values: Sequence[str], groups,
                       min_group_rows: int) -> Finding | None:
    """A categorical field against the target: omega squared and the one-way ANOVA over its values that have
    ``min_group_rows`` rows (a handful of rows says nothing about a value); the direction names the value with the
    highest mean. None when fewer than two values are that large."""
    from lm_insights.core.statistics import Groups, one_way_anova

    kept = [i for i, c in enumerate(groups.counts) if c >= max(min_group_rows, 2)]
    if len(kept) < 2:
        return None
    large = Groups([groups.counts[i] for i in kept], [groups.means[i] for i in kept],
                   [groups.variances[i] for i in kept])
    estimate = one_way_anova(large)
    top = max(kept, key=lambda i: (groups.means[i], values[i]))
    direction = f"highest {target} when {field} = {values[top]}"
    return Finding("driver", field, target, estimate, driver_claim(field, target, estimate, direction),
                   direction=direction)


def worth_controlling(first: Finding, second: Finding, r_between: float, n: int, fdr: float) -> bool:
    """Whether to test two numeric drivers each with the other held fixed: each alone passes ``fdr`` (unadjusted)
    and they go together (their own correlation passes it too), the case where one may only stand in for the other.
    Holding fixed a column that does not drive the target, or that has nothing to do with the other, says nothing."""
    from lm_insights.core.statistics import correlation

    alone = all(f.estimate.p_value is not None and f.estimate.p_value < fdr for f in (first, second))
    return alone and n >= 3 and correlation(r_between, n).p_value < fdr


def controlled_driver(field: str, other: str, target: str, r_xy: float, r_xz: float, r_yz: float, n: int) -> Finding:
    """Whether ``field`` still explains the target with ``other`` held fixed (partial correlation)."""
    from lm_insights.core.statistics import partial_correlation

    partial, estimate = partial_correlation(r_xy, r_xz, r_yz, n)
    claim = (f"with {other} held fixed, {field} still explains {percent(estimate.effect)} of the variance of {target} "
             f"that {other} leaves ({interval(estimate)}, n = {n}; partial r = {partial:+.2f}).")
    return Finding("driver", f"{field} | {other}", target, estimate, claim)


def segment_findings(segment: str, target: str, values: Sequence[str], groups, min_group_rows: int,
                     about: str = "") -> list[Finding]:
    """Each value of a segment against all other rows (Welch); values or rests under ``min_group_rows`` rows are
    listed untested."""
    from lm_insights.core.statistics import group_against_rest

    findings = []
    if len(values) < 2:
        return findings
    n = groups.n
    for i, value in enumerate(values):
        n_group = groups.counts[i]
        if min(n_group, n - n_group) < max(min_group_rows, 2):
            continue
        findings.append(replace(segment_finding(segment, value, target, group_against_rest(groups, i), n_group, True),
                                about=about or segment))
    return findings


ALL_ROWS = "all rows"


def mean_change(subject: str, target: str, now: tuple[int, float, float], before: tuple[int, float, float],
                day: str, min_group_rows: int) -> Finding | None:
    """The target's mean (in one segment value, or in ALL_ROWS) against the previous partition's (Welch); None when
    either side has fewer than ``min_group_rows`` rows."""
    from lm_insights.core.statistics import welch_difference

    if min(now[0], before[0]) < max(min_group_rows, 2):
        return None
    estimate = welch_difference(*now, *before)
    what = target if subject == ALL_ROWS else f"{target} in {subject}"
    claim = difference_claim(what, f"than on {day}", estimate, f"n = {now[0]} against {before[0]}")
    return Finding("change", subject, target, estimate, claim)


def segment_changes(segment: str, target: str, now: dict[str, int], groups_now, before: dict[str, int],
                    groups_before, day: str, min_group_rows: int) -> list[Finding]:
    """Per value of a segment (``now``/``before``: value -> index into the day's groups): did the target's mean
    move more than in the other rows since the previous partition? A change of all rows alike is ALL_ROWS's
    finding, not one per value."""
    from lm_insights.core.statistics import difference_in_changes, rest_of

    def side(groups, i):
        return groups.counts[i], groups.means[i], groups.variances[i] if groups.counts[i] > 1 else 0.0

    findings = []
    for value in sorted(set(now) & set(before)):
        i, j = now[value], before[value]
        if min(groups_now.n - groups_now.counts[i], groups_before.n - groups_before.counts[j]) < max(min_group_rows, 2):
            continue  # no rest (or too small a rest) to compare the change with
        group_now, group_before = side(groups_now, i), side(groups_before, j)
        rest_now, rest_before = rest_of(groups_now, i), rest_of(groups_before, j)
        if min(group_now[0], group_before[0], rest_now[0], rest_before[0]) < max(min_group_rows, 2) \
                or group_before[1] == 0 or rest_before[1] == 0:
            continue
        estimate = difference_in_changes(group_now, group_before, rest_now, rest_before)
        subject = f"{segment} = {value}"
        claim = (f"{target} in {subject} changed {group_now[1] / group_before[1] - 1:+.0%} since {day}, against "
                 f"{rest_now[1] / rest_before[1] - 1:+.0%} in the other rows (difference {estimate.effect:+.0%}, "
                 f"95% CI {estimate.ci_low:+.0%} to {estimate.ci_high:+.0%}, n = {group_now[0]} against "
                 f"{group_before[0]}).")
        findings.append(Finding("change", subject, target, estimate, claim))
    return findings


def label_mix_change(name: str, target: str, labels: Sequence[str], now: Sequence[int], before: Sequence[int],
                     day: str, min_group_rows: int) -> Finding | None:
    """A label set's mix against the previous partition: chi-square (Fisher for a small 2 x 2), told by the label
    whose share moved most, with its proportion difference and interval."""
    from lm_insights.core.statistics import contingency, proportion_difference

    n_now, n_before = sum(now), sum(before)
    if min(n_now, n_before) < max(min_group_rows, 2) or len(labels) < 2:
        return None
    p, test, share = contingency([now, before])
    moved = max(range(len(labels)), key=lambda i: (abs(now[i] / n_now - before[i] / n_before), labels[i]))
    diff, low, high = proportion_difference(now[moved], n_now, before[moved], n_before)
    estimate = Estimate(diff, "proportion difference", low, high, p, n_now + n_before, share, test)
    way = "more" if diff >= 0 else "fewer"
    claim = (f"the {name} mix moved since {day}: {percent(abs(diff))} {way} rows are {labels[moved]} "
             f"({percent(now[moved] / n_now)} against {percent(before[moved] / n_before)}, {interval(estimate)}, "
             f"n = {n_now} against {n_before}).")
    return Finding("label_mix", f"{name} mix", target, estimate, claim)


def driver_change(field: str, target: str, r_now: float, n_now: int, r_before: float, n_before: int,
                  day: str) -> Finding:
    """A numeric driver's correlation against the previous partition's (Fisher z)."""
    from lm_insights.core.statistics import correlation_change

    estimate = correlation_change(r_now, n_now, r_before, n_before)
    claim = (f"the correlation of {field} with {target} moved from {r_before:+.2f} on {day} to {r_now:+.2f} "
             f"(difference 95% CI {estimate.ci_low:+.2f} to {estimate.ci_high:+.2f}, n = {n_now} against "
             f"{n_before}).")
    return Finding("change", f"driver {field}", target, estimate, claim)


def cluster_finding(target: str, k: int, silhouette: float, rows: int, min_silhouette: float,
                    names: str) -> Finding:
    """Discovery's groups: a finding only when they are separated (silhouette at or above ``min_silhouette``)."""
    separated = silhouette >= min_silhouette
    estimate = Estimate(silhouette, "silhouette (cosine)", None, None, None, rows, 0.0, "threshold")
    if separated:
        claim = (f"Discovery found {k} separated groups of similar rows among {rows} (silhouette {silhouette:.2f}, "
                 f"at least {min_silhouette:.2f}): {names}.")
    else:
        claim = (f"No clear groups among {rows} rows: the best split into {k} has silhouette {silhouette:.2f}, "
                 f"below {min_silhouette:.2f}.")
    return Finding("cluster", "clusters", target, estimate, claim, tested=False, significant=separated)


def rule_finding(row: dict) -> Finding:
    """A rule set's candidate row (lm_insights.explain.rules.rule_findings) as a finding: its held-out p-value joins
    the family, and it is significant only where its own verdict (faithful) holds too."""
    gain = row["effect"]
    estimate = Estimate(gain, row["effect_measure"], row["ci_low"], row["ci_high"], row["p_value"], row["n"],
                        max(gain or 0.0, 0.0), "held-out against the majority rule")
    return Finding("rule", row["subject"], row["target"], estimate, row["sentence"],
                   tested=row["p_value"] is not None, verdict=bool(row["significant"]),
                   significant=False if row["p_value"] is None else bool(row["significant"]))
