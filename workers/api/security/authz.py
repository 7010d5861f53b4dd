"""Who may do what: per action, per pipeline and per node selector.

```yaml
groups:
  sre: [slack:U0SRE1, slack:U0SRE2, mattermost:k3x9]
  prod-approvers: [slack:U0SRE1]
actions:                 # who may do the action at all
  rollout: {groups: [sre], users: [hook:release]}
  approve: {groups: [sre]}
  abort:   {groups: [sre]}
  resume:  {groups: [sre]}
  status:  {users: ["*"]}
pipelines:               # further required, per pipeline
  corigine-offload:
    rollout: {groups: [sre]}
selectors:               # further required when the run touches matching nodes
  - match: {env: production}
    require:
      rollout: {groups: [prod-approvers]}
      approve: {groups: [prod-approvers]}
```

A request passes when the principal is allowed by the action's grant and by
every pipeline and selector rule that applies. A selector rule applies when
the request's selector includes its labels, or when any target node carries
them; when the nodes' labels cannot be known (named nodes on a real fleet),
every selector rule applies: the decision fails closed. Without a
configuration file, only the REST token holder (`api`) may act.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.api.config import load_model
from workers.api.models import Action, Principal
from workers.api.validation import PIPELINE_NAME, LabelKey, LabelValue

USER = r"^((slack|mattermost|hook):[A-Za-z0-9._-]{1,64}|api|\*)$"
GROUP = r"^[a-z][a-z0-9_-]{0,62}$"
UserKey = Annotated[str, Field(pattern=USER)]
GroupName = Annotated[str, Field(pattern=GROUP)]
ACTIONS: tuple[Action, ...] = ("rollout", "approve", "abort", "resume", "status")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Grant(_Strict):
    users: list[UserKey] = Field(default_factory=list)
    """Principals by key; `*` is anyone, known or not."""
    groups: list[GroupName] = Field(default_factory=list)

    def describe(self) -> str:
        parts = ([f"group {', '.join(self.groups)}"] if self.groups else []) + (
            [f"user {', '.join(self.users)}"] if self.users else [])
        return " or ".join(parts) or "nobody"


class SelectorRule(_Strict):
    match: dict[LabelKey, LabelValue] = Field(min_length=1)
    require: dict[Action, Grant]

    def applies(self, selector: dict[str, str] | None, labels: list[dict[str, str]] | None) -> bool:
        wanted = self.match.items()
        if selector and wanted <= selector.items():
            return True
        if labels is None:
            return True
        return any(wanted <= node.items() for node in labels)

    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.match.items())


class AuthzConfig(_Strict):
    groups: dict[GroupName, list[UserKey]] = Field(default_factory=dict)
    actions: dict[Action, Grant] = Field(default_factory=dict)
    pipelines: dict[Annotated[str, Field(pattern=PIPELINE_NAME)], dict[Action, Grant]] = Field(default_factory=dict)
    selectors: list[SelectorRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _groups_exist(self) -> AuthzConfig:
        grants = [*self.actions.values(), *(g for rules in self.pipelines.values() for g in rules.values()),
                  *(g for rule in self.selectors for g in rule.require.values())]
        for grant in grants:
            unknown = [g for g in grant.groups if g not in self.groups]
            if unknown:
                raise ValueError(f"unknown group(s) {', '.join(unknown)} (defined: {', '.join(self.groups) or 'none'})")
        return self

    def members(self, grant: Grant) -> set[str]:
        return {*grant.users, *(u for g in grant.groups for u in self.groups[g])}

    def known(self, principal: Principal) -> bool:
        everyone = {u for users in self.groups.values() for u in users}
        for grant in [*self.actions.values(), *(g for r in self.pipelines.values() for g in r.values()),
                      *(g for rule in self.selectors for g in rule.require.values())]:
            everyone |= set(grant.users)
        return principal.key in everyone

    def allows(self, grant: Grant, principal: Principal) -> bool:
        members = self.members(grant)
        return "*" in members or principal.key in members


DEFAULT = AuthzConfig(actions={a: Grant(users=["api"]) for a in ACTIONS})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class Target:
    """What a request touches: its pipeline, its selector, and its nodes' labels when known."""

    pipeline: str
    selector: dict[str, str] | None = None
    labels: list[dict[str, str]] | None = None


def decide(config: AuthzConfig, action: Action, principal: Principal, target: Target | None) -> Decision:
    grant = config.actions.get(action)
    if grant is None or not config.allows(grant, principal):
        if not config.known(principal):
            return Decision(False, f"unknown user {principal}: not in the authorization configuration")
        allowed = grant.describe() if grant else "nobody"
        return Decision(False, f"{principal} may not {action} (allowed: {allowed})")
    if target is None:
        return Decision(True)
    rule = config.pipelines.get(target.pipeline, {}).get(action)
    if rule is not None and not config.allows(rule, principal):
        return Decision(False, f"{principal} may not {action} pipeline {target.pipeline} (requires {rule.describe()})")
    for selector_rule in config.selectors:
        required = selector_rule.require.get(action)
        if required is None or not selector_rule.applies(target.selector, target.labels):
            continue
        if not config.allows(required, principal):
            return Decision(False, f"{principal} may not {action} nodes matching {selector_rule.describe()} "
                                   f"(requires {required.describe()})")
    return Decision(True)


def load_authz(path: Path | None) -> AuthzConfig:
    return DEFAULT if path is None else load_model(AuthzConfig, path, "authorization")
