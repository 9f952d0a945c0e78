"""The soak's verdict: RSS growth from just after the warm-up to the end of the load, each
end a median of three samples; ingest judged net of its index budgets; lag back to 0."""

from __future__ import annotations

from benchmarks.soak import WARMUP_MINUTES, verdict


def run(eventlog: list[float], ingest: float = 100.0,
        index: list[float] | None = None) -> list[dict[str, object]]:
    """One sample a minute from the warm-up's end on; the fanout stays at 120 MiB."""
    index = index or [0.0] * len(eventlog)
    return [{"minute": WARMUP_MINUTES + i,
             "rss_mb": {"ingest": ingest + index[i], "fanout": 120.0, "eventlog": mb},
             "ingest_index_mb": index[i]} for i, mb in enumerate(eventlog)]


def test_one_low_sample_at_either_end_is_not_growth() -> None:
    # 575 then ~600 and a spike to 652 at the end: single samples would say +13 %.
    result = verdict(run([575, 606, 598, 603, 582, 610, 605, 652, 612]), lag_zero=30.0)
    assert "failed" not in result
    assert result["rss_growth_pct"]["eventlog"] == round((612 - 598) / 598 * 100, 1)


def test_steady_growth_fails() -> None:
    result = verdict(run([500, 510, 520, 530, 540, 550, 560, 570, 580]), lag_zero=30.0)
    assert result["rss_growth_pct"]["eventlog"] == 11.8  # 510 -> 570 by the medians
    assert result["failed"] == ["eventlog: RSS grew 11.8 % after the warm-up (median of 3 "
                                "samples from 510.0 to 570.0 MiB)"]


def test_ingest_is_judged_net_of_its_index_budgets() -> None:
    samples = run([600.0] * 6, index=[2, 4, 6, 30, 40, 50])
    result = verdict(samples, lag_zero=30.0)
    assert result["rss_growth_pct"]["ingest"] == 0.0
    assert result["rss_growth_raw_pct"]["ingest"] > 30
    assert "failed" not in result


def test_lag_not_back_to_zero_fails() -> None:
    result = verdict(run([600.0] * 6), lag_zero=None)
    assert result["failed"] == ["consumer lag not back to 0 within 155 s of the load's end"]
