"""What the reconciler does with a node `nicflow verify` finds drifted.

Each drifted node gets, once per time it is found drifted:
- the label `nicflow.io/state=drifted` (so `kubectl get nodes -L nicflow.io/state` and
  `nicflow nodes` show it, and a policy with `repair: true` rolls it out again);
- a Warning Event on the Node, reason `NicflowDrift`, with what differs (as `kubectl describe
  node` shows events), recorded as the runs' node Events are (`record_event`): the same drift
  found again is that Event's count and lastTimestamp, counted in Redis (workers.node_events);
- a message in the policy's chat channel, where chat is configured (`chat_channel` in the
  policy, `NICFLOW_SLACK_BOT_TOKEN` in the environment);
and the gauge `nicflow_nodes_drifted{policy}` counts the policy's nodes labelled drifted.

Reporting never stops the reconciler: an API or chat error is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Gauge
from redis import Redis
from redis.exceptions import RedisError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from tasks.cluster.kube import KubeCluster
from tasks.cluster.reporter import STATE_LABEL
from tasks.cluster.surface import NodeEvent, NodeView
from workers.node_events import counted
from workers.verify_view import Verdict
from workflows.errors import StepError

log = logging.getLogger("nicflow.reconcile.drift")
DRIFTED = "drifted"
EVENT_REASON = "NicflowDrift"
EVENT_ACTION = "DetectDrift"
NODES_DRIFTED = Gauge("nicflow_nodes_drifted", "Nodes of the policy labelled nicflow.io/state=drifted",
                      ["policy"])


def count_drifted(policy: str, nodes: Iterable[NodeView]) -> int:
    drifted = sum(1 for n in nodes if n.labels.get(STATE_LABEL) == DRIFTED)
    NODES_DRIFTED.labels(policy=policy).set(drifted)
    return drifted


@dataclass
class ChatChannel:
    """A Slack channel the bot posts to (chat.postMessage)."""

    client: WebClient
    channel: str

    def say(self, text: str) -> None:
        try:
            self.client.chat_postMessage(channel=self.channel, text=text)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("cannot post the drift report to Slack channel %s: %s", self.channel, type(exc).__name__)


def chat_channel(channel: str | None) -> ChatChannel | None:
    """The policy's channel, when a bot token is configured (the api's settings)."""
    if not channel:
        return None
    from workers.api.config import ApiSettings

    settings = ApiSettings()
    if settings.slack_bot_token is None:
        log.warning("the policy names chat channel %s but NICFLOW_SLACK_BOT_TOKEN is unset: drift is not posted",
                    channel)
        return None
    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                       timeout=10)
    return ChatChannel(client, channel)


def describe(verdict: Verdict) -> str:
    return "; ".join(d.text().replace("  ", " ") for d in verdict.differences) or "drifted"


def report_drift(cluster: KubeCluster, redis: Redis, *, policy: str, drifted: dict[str, Verdict],
                 repair: bool, chat: ChatChannel | None) -> list[str]:
    """Label, Event and chat for each drifted node; the nodes labelled."""
    labelled = []
    for node, verdict in sorted(drifted.items()):
        what = describe(verdict)
        try:
            cluster.patch_node(node, labels={STATE_LABEL: DRIFTED})
            labelled.append(node)
            now = time.time()
            event = NodeEvent(node=node, reason=EVENT_REASON, type="Warning", action=EVENT_ACTION, first=now,
                              last=now, message=f"node drifted from pipeline state ({policy}): {what}")
            cluster.record_event(*counted(redis, [event]))
        except StepError as exc:
            log.warning("cannot report the drift of node %s: %s", node, exc.message)
        except RedisError as exc:  # the repeat count is Redis's
            log.warning("cannot report the drift of node %s: Redis: %s", node, exc)
        log.warning("node %s drifted: %s", node, what)
    if chat is not None and drifted:
        then = "a repair run follows" if repair else "not repaired (repair: false)"
        lines = [f"nicflow {policy}: {len(drifted)} node(s) drifted, {then}"]
        lines += [f"• {node}: {describe(v)}" for node, v in sorted(drifted.items())]
        chat.say("\n".join(lines))
    return labelled
