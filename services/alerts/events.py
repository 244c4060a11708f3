"""What happened in a run that a trader is told: read from the run's summary and the previous run's, nothing else.

Events: a signal passes the risk gate (or leaves it), the market-neutral basket changes, the run failed or left out
more than `alerts.max_excluded_share` of its universe, drift retrained a horizon, a model was promoted or refused by
the registry gate. Each alert's key is (event, subject, as-of): a re-run or a retried execution of the same decision
makes the same keys, and the store sends each key once.
"""

from __future__ import annotations

from urllib.parse import quote

from shared.records import Alert, RunSummary, Signal


def _key(event: str, subject: str, as_of: str) -> str:
    return f"{event}|{subject}|{as_of}"


def _tradable(summary: RunSummary | None) -> dict[tuple[str, str, str], Signal]:
    if summary is None:
        return {}
    return {(s.coin, s.direction, s.target): s for s in summary.signals + summary.cross_section_signals if s.tradable}


def _legs(summary: RunSummary | None) -> tuple[set[str], set[str]]:
    b = summary.basket if summary is not None else None
    return ({x.coin for x in b.long}, {x.coin for x in b.short}) if b is not None else (set(), set())


def events(summary: RunSummary, previous: RunSummary | None, *, max_excluded_share: float,
           dashboard_url: str) -> list[Alert]:
    """The alerts of one run, against the run before it (None: the first run, so every tradable signal is new)."""
    base = dashboard_url.rstrip("/")
    out: list[Alert] = []

    def add(event: str, subject: str, title: str, body: str, path: str) -> None:
        out.append(Alert(key=_key(event, subject, summary.as_of), event=event, subject=subject, as_of=summary.as_of,
                         run_id=summary.run_id, title=title, body=body, link=base + path))

    now, before = _tradable(summary), _tradable(previous)
    for (coin, direction, target), s in sorted(now.items()):
        if (coin, direction, target) not in before:
            probs = ", ".join(f"{h} {100 * p:.1f}%" for h, p in s.p_up.items())
            add("signal_entered", f"{coin} {direction}", f"cst: {coin} {direction} signal",
                f"{coin} {direction} on {', '.join(s.horizons)} (lowest confidence {100 * s.min_confidence:.1f}%; "
                f"{'P(beats)' if target == 'cross_section' else 'P(up)'} {probs}); passed the risk gate at "
                f"{summary.as_of}.", f"/coins/{quote(coin)}")
    for (coin, direction, target), _s in sorted(before.items()):
        if (coin, direction, target) not in now:
            add("signal_left", f"{coin} {direction}", f"cst: {coin} {direction} signal ended",
                f"{coin} {direction} is no longer a tradable signal at {summary.as_of}.", f"/coins/{quote(coin)}")
    if summary.basket is not None and previous is not None and _legs(summary) != _legs(previous):
        (long_now, short_now), (long_before, short_before) = _legs(summary), _legs(previous)
        changes = [f"long +{c}" for c in sorted(long_now - long_before)] + \
                  [f"long -{c}" for c in sorted(long_before - long_now)] + \
                  [f"short +{c}" for c in sorted(short_now - short_before)] + \
                  [f"short -{c}" for c in sorted(short_before - short_now)]
        add("basket_changed", summary.basket.horizon, f"cst: {summary.basket.horizon} basket changed",
            f"{summary.basket.label or 'market-neutral basket'}: {', '.join(changes)}.", "/#cross-section")
    if summary.status == "failed":
        said = "; ".join(f"{f.step}{'[' + f.item + ']' if f.item else ''}: [{f.code}] {f.message}"
                         for f in summary.failures[:5])
        add("run_failed", summary.run_id, "cst: run failed", f"run {summary.run_id} did not complete: {said}",
            f"/runs/{quote(summary.run_id)}")
    # Coins the universe left out by its rules (listing age, liquidity, a peg) were never meant to be predicted:
    # the share is of the coins that were, among which data failed.
    by_rule = {c for c, why in summary.excluded.items() if all("universe at this decision" in part
                                                               for part in why.split("; "))}
    failed = {c: why for c, why in summary.excluded.items() if c not in by_rule}
    meant = summary.coins_total - len(by_rule)
    if meant > 0 and len(failed) / meant > max_excluded_share:
        share = len(failed) / meant
        add("universe_excluded", summary.run_id, "cst: many coins left out",
            f"run {summary.run_id} left out {len(failed)} of the {meant} coins it meant to predict "
            f"({100 * share:.0f}% > {100 * max_excluded_share:.0f}%): "
            + "; ".join(f"{c}: {why}" for c, why in list(failed.items())[:5]), f"/runs/{quote(summary.run_id)}")
    for h, verdict in sorted(summary.drift.items()):
        drifted = [r for r in verdict.reasons if not r.startswith("cadence")]
        if verdict.retrain and drifted and h in summary.retrained:
            add("drift_retrain", h, f"cst: {h} retrained on drift", f"{h}: {'; '.join(drifted)}.", "/models")
    for h, result in sorted(summary.retrained.items()):
        if not isinstance(result, dict) or result.get("promoted") is None:
            continue  # a retrain that broke is a run failure, said above
        why = result.get("gate") or "not said"
        if result["promoted"]:
            add("model_promoted", h, f"cst: {h} model {result.get('version')} promoted",
                f"{h}: {result.get('version')} is now CURRENT ({why}).", "/models")
        else:
            add("model_refused", h, f"cst: {h} model {result.get('version')} refused",
                f"{h}: the gate kept the current model: {why}.", "/models")
    return out
