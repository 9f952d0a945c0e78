"""The Faust app's wiring, without starting it."""

from __future__ import annotations

from collections.abc import Callable

from services.fanout.app import create_app
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
