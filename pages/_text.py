"""The app's sentences about what mgr/ measures: a finding is a verdict (a badge), one sentence, and
details for an expander. mgr/ returns data; the words people read are written here, next to the pages."""
from __future__ import annotations

from dataclasses import dataclass

from mgr import demos
from mgr.analysis.finder_view import SIGNAL_THRESHOLD, OneVector, SignalReading
from mgr.analysis.runs import TINY_VAL
from mgr.demo_records import arm_configs, headline, record_compare, record_pairs, same_arms, same_splits

SIGNAL_DOC = "docs/method.md#the-signal"
ONE_VECTOR_DOC = "docs/method.md#a-finder-that-adds-one-vector"
DEMO_DOC = "docs/demos.md"


@dataclass(frozen=True)
class Finding:
    verdict: str  # the badge's word
    colour: str  # the badge's colour (st.badge): green holds, red the opposite, orange unclear, grey unknown
    sentence: str  # one sentence, with its numbers
    details: str = ""  # the rest, for a "details" expander ("" when there is none)


# ----------------------------------------------------------------------------- the finder's signal

def signal_finding(r: SignalReading) -> Finding:
    """The reading of a run's hg_cos (mgr.analysis.finder_view.signal_reading) in words."""
    rule = (f"A signal: the 95% interval's lower bound above {SIGNAL_THRESHOLD}. hg_cos is the cosine between "
            "the finder's hypergradient and the previous step's (the KL term's pull left out); independent draws "
            f"that share a direction add up instead of cancelling. How it is measured and what raises it: "
            f"`{SIGNAL_DOC}`.")
    if r.verdict is None:
        if r.why == "too few":
            return Finding("not yet", "gray", f"One log line of hg_cos so far ({r.hg_cos[0]:+.2f} at step "
                                              f"{int(r.steps[0])}): too few for an interval.", rule)
        return Finding("no finder", "gray", "This run logs no hg_cos: only runs with a finder (mgr, gda-mps) "
                                            "have a hypergradient to read.", rule)
    where = f"hg_cos averages {r.mean:+.2f} over the run's last quarter, 95% interval [{r.low:+.2f}, {r.high:+.2f}]"
    details = (f"Steps {r.first}–{r.last}, {r.n} log lines. {rule}")
    if r.verdict == "signal":
        finding = Finding("signal", "green", f"The finder follows a signal: {where}.", details)
    elif r.verdict == "noise":
        details = ("Independent draws of its hypergradient one step apart point in nearly unrelated directions, so "
                   "each step is mostly noise and most of what it moves cancels. A faint common direction can "
                   "still add up over hundreds of steps: whether what the finder learnt helps on held-out data is "
                   "measured apart (`bench/meta_signal.py`; on Fashion-MNIST 1% the default finder lowered "
                   "held-out loss for 23 of 24 draws at step 450 of 500). Read the differences between uniform and "
                   f"finder samples with that in mind. {details}")
        finding = Finding("noise", "orange", f"The finder's steps are mostly noise: {where}.", details)
    else:
        finding = Finding("weak", "orange", f"The finder follows a weak signal at best: {where}, above 0 but not "
                                            f"above {SIGNAL_THRESHOLD}.", "A longer run narrows the interval. " + details)
    if r.kl_share_last > 0.5:
        finding = Finding(finding.verdict, finding.colour, finding.sentence,
                          f"Over the same steps the KL term makes {r.kl_share_last:.0%} of the hypergradient's "
                          "length: the finder is mostly pulled back toward the prior, i.e. toward uniform sampling "
                          "(its lookahead weighs the data by the classifier's learning rate, which the schedule "
                          "takes toward 0). " + finding.details)
    return finding


def one_vector_finding(v: OneVector) -> Finding:
    """A finder that moves every latent by nearly the same vector (mgr.analysis.finder_view.one_vector_reading)."""
    return Finding("one vector", "orange",
                   f"The finder adds nearly one vector to every latent: at step {v.step} only {v.spread:.3f} of its "
                   f"mean shift {v.shift:.3f} ({v.spread / v.shift:.0%}) depends on z.",
                   "F(z) ≈ z + b moves the whole latent distribution; it does not choose which latents to sample, "
                   "whatever the amplified images show. A finder whose hidden units die in its first updates (a "
                   f"ReLU finder at a high learning rate) leaves only its output bias: `{ONE_VECTOR_DOC}`.")


# ----------------------------------------------------------------------------- Compare and Feature space

def lead_reason(lead: dict) -> str:
    """Why Compare leads with the accuracy it leads with (mgr.analysis.runs.lead_statistic)."""
    if lead["lead"] == "test_last":
        return (f"Leading with test accuracy at the last step (test @ best val beside it): with {lead['smallest_val']} "
                "validation images the best step is largely chance; on digits 10% (10 validation images, 8 seeds) "
                "test @ best val varied ±6.7 points between seeds, test @ last step ±0.9.")
    return ("Leading with test accuracy at the best validation step (model selection), the last step's beside it"
            + (f": every validation split has at least {TINY_VAL} images." if lead["smallest_val"] is not None else
               ": the validation split sizes are unknown here (data not on this machine)."))


def between_reading(table: dict) -> str:
    """A margin table's fractions of samples between two clusters (mgr.analysis.margins.between_fractions) in words."""
    n, fu, ff = table["n"], table["uniform_fraction"], table["finder_fraction"]
    if table["real_test_fraction"] is None:
        return (f"uniform {fu:.0%}, finder {ff:.0%} of samples between two clusters; this probe has no held-out real "
                "images to compare them with.")
    words = (table["uniform_vs_real"], table["finder_vs_real"])
    return (f"Against real held-out test images ({table['real_test_fraction']:.0%}, {table['real_test_total']}/"
            f"{table['n_real_test']}): uniform samples sit between two classes {words[0]} ({fu:.0%}, "
            f"{table['uniform_total']}/{n}), finder samples {words[1]} ({ff:.0%}, {table['finder_total']}/{n})"
            + ("; \"about as often\" is within chance at these counts." if "about as often" in words else "."))


# ----------------------------------------------------------------------------- demos

VERDICT_COLOUR = {"holds": "green", "opposite": "red", "inconclusive": "orange"}


def demo_finding(demo: demos.Demo, record: dict | None, data: str = demos.DEFAULT_DATA) -> Finding:
    """What this project measured for a demo (its bench/results record), or that it has not measured it.
    A record made with other arms or splits than today's is named out of date, never passed off as this demo's
    result."""
    if not record:
        return Finding("not measured", "gray", "Not measured yet.", "Run `python bench/demos.py` to measure it.")
    if record_compare(record) != demo.statistic.compare:
        return Finding("out of date", "gray", "Out of date: the record summarises its seeds another way.",
                       f"The record compares seeds as a {record_compare(record)}, the demo as a "
                       f"{demo.statistic.compare}: `python bench/demos.py --resummarize` recomputes it.")
    rerun = f"`python bench/demos.py --data {data} --demos {demo.id}`"
    where = record["machine"].split(": ", 1)[-1] if record.get("machine") else f"{record.get('cores', '?')} cores"
    details = (f"{record['dataset']} {record['ratio']:g}, {record['seeds']} seeds over data seeds "
               f"{sorted(set(record.get('data_seeds', [0])))}, {record['steps']} steps, {demo.statistic.label}: "
               f"{headline(demo, record)}. {record.get('seconds', '?')} s on {where}; on another CPU the same seeds "
               f"train to other per-seed values (`{DEMO_DOC}#reproducing-on-another-cpu`). How a demo is judged: "
               f"`{DEMO_DOC}`.")
    if not same_arms(record.get("arms"), arm_configs(demo, data)):
        return Finding("out of date", "gray", "Out of date: the demo's configuration has changed since it was "
                                              "measured.", f"Re-run {rerun}. The record: {details}")
    if not same_splits(demo, record, data):
        return Finding("out of date", "gray", "Out of date: measured on other data splits than the demo's seeds use.",
                       f"Re-run {rerun}. The record: {details}")
    summaries = record_pairs(record)
    if len(summaries) > 1:
        verdict = record.get("verdict", demos.overall_verdict(summaries))
        return Finding(verdict, VERDICT_COLOUR.get(verdict, "gray"), pairs_sentence(demo, summaries), details)
    summary = summaries[0]
    return Finding(summary.verdict, VERDICT_COLOUR.get(summary.verdict, "gray"),
                   f"{demo.diff_label} = {_value(demo, summary)}, positive in {summary.holds_in} of {summary.n} "
                   "seeds.", details)


def pairs_sentence(demo: demos.Demo, summaries) -> str:
    """A demo of several pairs in one sentence: the pairs whose interval excludes 0, each with its mean."""
    def named(verdict):
        return [f"{_pair_name(demo, p)} ({_value(demo, s)})" for p, s in zip(demo.pairs, summaries)
                if s.verdict == verdict]
    held, opposite = named("holds"), named("opposite")
    if held:
        return f"Holds for {', '.join(held)}" + (f"; the opposite for {', '.join(opposite)}." if opposite else ".")
    if opposite:
        return f"The opposite holds for {', '.join(opposite)}."
    known = [(abs(s.mean), p, s) for p, s in zip(demo.pairs, summaries) if s.mean is not None]
    if not known:
        return "No seed has both runs of a pair finished yet."
    _, p, s = max(known, key=lambda t: t[0])
    return f"No pair's interval excludes 0; the largest is {_pair_name(demo, p)} ({_value(demo, s)})."


def _pair_name(demo: demos.Demo, pair: demos.Pair) -> str:
    """A pair in few words: its family at its dose in a sweep ("gda at 4"), else its arms ("gda − gda-weak")."""
    return f"{pair.family} at {pair.dose:g}" if pair.dose is not None else demo.pair_label(pair)


def _value(demo: demos.Demo, summary, interval: bool = False, stat: demos.Statistic | None = None) -> str:
    """The mean difference (for a ratio statistic the typical factor), with its 95% interval if asked."""
    stat = stat or demo.statistic
    return stat.text(summary.mean, summary.ci95 if interval else None)


def live_finding(demo: demos.Demo, summary, done: bool, seeds: int, summaries=None) -> Finding:
    """A launched demo's verdict as its seeds finish: the verdict ("so far" until every seed is in), the
    mean difference with its interval and wins in one sentence; the verdict's reading in the details. A demo of
    several pairs (`summaries`) names the pairs whose interval excludes 0."""
    if summaries is not None and len(summaries) > 1:
        if not any(s.n for s in summaries):
            return Finding("waiting", "gray", "No seed has both runs of a pair finished yet.", "")
        verdict = demos.overall_verdict(summaries)
        details = "; ".join(demos.describe(demo, s, p) for p, s in zip(demo.pairs, summaries)) + \
            f". Statistic: {demo.statistic.label}. How a demo is judged: `{DEMO_DOC}`."
        return Finding(verdict if done else f"so far: {verdict}", VERDICT_COLOUR.get(verdict, "gray"),
                       pairs_sentence(demo, summaries), details)
    details = f"{demos.describe(demo, summary)}. Statistic: {demo.statistic.label}. How a demo is judged: `{DEMO_DOC}`."
    if summary.n == 0:
        return Finding("waiting", "gray", "No seed has both arms finished yet.", "")
    if summary.ci95 is None:
        return Finding("1 seed", "gray", f"{demo.diff_label} = {_value(demo, summary)} on 1 seed: an interval needs 2.",
                       details)
    verdict = summary.verdict if done else f"so far: {summary.verdict}"
    return Finding(verdict, VERDICT_COLOUR.get(summary.verdict, "gray"),
                   f"{demo.diff_label} = {_value(demo, summary, interval=True)}, positive in {summary.holds_in} of "
                   f"{summary.n} seeds" + ("." if done else f" of the {seeds} launched."), details)


def also_sentence(demo: demos.Demo, stat: demos.Statistic, summaries) -> str:
    """A further statistic beside the verdict (the finder demos' harm), per pair: its mean difference and interval."""
    parts = [f"{demo.pair_label(p)} = {_value(demo, s, interval=True, stat=stat)} over {s.n} seeds"
             for p, s in zip(demo.pairs, summaries) if s.mean is not None]
    return f"{stat.label[0].upper()}{stat.label[1:]}: " + ("; ".join(parts) if parts else "no seed has both yet") + "."
