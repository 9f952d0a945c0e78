"""The Faust app's wiring, without starting it."""

from __future__ import annotations

from collections.abc import Callable

from faust.types import TP

from services.fanout.app import StreamClockMonitor, create_app
from webhooks.settings import Settings


def test_apps_take_every_name_from_settings_and_coexist_in_one_process(
        make_settings: Callable[..., Settings]) -> None:
    first = create_app(make_settings(topic_prefix="alpha", retry_schedule="1s,2s"))
    second = create_app(make_settings(topic_prefix="beta"))  # no duplicate metric error
    assert first.conf.id == "alpha-fanout" and second.conf.id == "beta-fanout"
    assert sorted(first.agents) == ["deliver-alpha.deliveries", "deliver-alpha.ordered",
                                    "deliver-alpha.retry.1s", "deliver-alpha.retry.2s",
                                    "services.fanout.agents.match"]
    subscribed = {topic for agent in first.agents.values()
                  for topic in agent.channel.topics}  # type: ignore[attr-defined]
    assert subscribed == {"alpha.events", "alpha.deliveries", "alpha.ordered", "alpha.retry.1s",
                          "alpha.retry.2s"}


def test_the_monitor_keeps_only_the_stream_clock_that_faust_checks_for_stalls(
        make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())
    monitor = app.monitor
    assert isinstance(monitor, StreamClockMonitor)
    partition = TP("webhooks.events", 3)
    monitor.on_message_in(partition, 7, None)
    state = monitor.on_stream_event_in(partition, 7, None, None)
    monitor.on_stream_event_out(partition, 7, None, None, state)
    monitor.on_message_out(partition, 7, None)
    assert partition in monitor.stream_inbound_time  # what Faust's stalled-stream check reads
    assert monitor.messages_received_total == 0 and monitor.events_total == 0
