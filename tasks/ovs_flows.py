"""The offload verdict from `ovs-appctl dpctl/dump-flows -m` output.

A flow line is read the way Open vSwitch 3.1.0 writes it (lib/dpctl.c
`format_dpif_flow`): with -m `ufid:<uuid>, ` first (lib/odp-util.c
`odp_format_ufid`), the match, `packets:N, bytes:N, used:...` (lib/dpif.c
`dpif_flow_stats_format`, `, flags:...` when TCP flags were seen), then
`, offloaded:yes|partial` for an offloaded flow only, `, dp:<layer>`, and
`, actions:...` (the userspace datapath adds `, dp-extra-info:...` after the
actions). Without -m neither `offloaded:` nor `dp:` is printed.
tests/fixtures/ovs/ holds real captures of each form.

An offloaded flow carries both `offloaded:yes` and `dp:tc` on the same line
(the Kube-OVN page's test). Everything else is reported, never counted as
success:
- no `dp:` field on any flow: the dump was taken without -m, so nothing can
  be said either way;
- `dp:ovs`: a datapath flow in software;
- `dp:tc` without `offloaded:yes`: a TC flow the NIC did not take;
- `offloaded:partial`: DPDK partial offload, not hardware offload;
- `offloaded:yes` on another layer (`dp:dpdk`): not TC offload to the NIC.
An error from an OVS program (`ovs-vswitchd: Failed to parse type (bogus)
(Invalid argument)`, `ovs-appctl: ovs-vswitchd: server returned an error`)
makes the input unreadable: it is not a dump, so it is not "no flows" either.
Other lines that are not flows (the userspace datapath's `flow-dump from ...`
headers, blank lines) are counted and ignored.
Used by verify-offload, verify-offload-cluster and `nicflow check-flows`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

# dpctl_error (lib/dpctl.c) and ovs_error/ovs_fatal (lib/util.c) start every
# message with the program name, or `program(subprogram): `.
ERROR_LINE = re.compile(r"^ovs-[a-z-]+(?:\([^)]*\))?: ")
# What odp_flow_format starts a match with: a key attribute `name(`, or
# `<empty>` for a flow without one.
MATCH_START = re.compile(r"^(?:[a-z_0-9]+\(|<empty>)")
UFID = re.compile(r"^ufid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOP_FIELD = re.compile(r"^([a-z][a-z-]*):(.*)$")
ACTIONS = ", actions:"
EXTRA = ", dp-extra-info:"
KINDS = {
    "software": "dp:ovs (software datapath)",
    "tc-software": "dp:tc without offloaded:yes (TC flows the NIC did not take)",
    "partial": "offloaded:partial (DPDK partial offload, not hardware offload)",
    "offloaded-not-tc": "offloaded:yes without dp:tc (not TC offload to the NIC)",
    "unknown": "without a dp: field",
}


class UnreadableFlowLine(ValueError):
    """A line shaped like a flow that OVS would not print (a field twice)."""


@dataclass(frozen=True)
class FlowLine:
    """A flow line's top-level parts in the order OVS prints them."""

    ufid: str | None
    match: str
    fields: tuple[tuple[str, str], ...]
    """`name:value` between the match and the actions: packets, bytes, used, [flags], [offloaded], [dp]."""
    actions: str
    extra: str | None
    """dp-extra-info, printed after the actions by the userspace datapath with -m."""

    def shape(self) -> tuple[str, ...]:
        """The parts' names in order, the structure two dumps are compared by."""
        head = ("ufid",) if self.ufid else ()
        tail = ("dp-extra-info",) if self.extra is not None else ()
        return (*head, "match", *(name for name, _ in self.fields), "actions", *tail)

    def match_keys(self) -> tuple[str, ...]:
        """The match's key attributes by name (`in_port`, `eth`, ...), in order."""
        return tuple(re.findall(r"(?:^|(?<=\),))([a-z_0-9]+)\(", self.match))


def split_flow(line: str) -> FlowLine | None:
    """A flow line's parts, or None for a line that is not a flow. The match
    has no ", " inside (odp_flow_format joins keys with ","; only its texts
    for a malformed key, `bad length N, expected M`, have one, and such a
    line is not read as a flow), the fields are `name:value` joined by ", ",
    and the actions, which can hold any text, come last but for
    dp-extra-info."""
    line = line.strip()
    at = line.find(ACTIONS)
    if at < 0:
        return None
    head, actions = line[:at].split(", "), line[at + len(ACTIONS):]
    ufid = head.pop(0) if head and UFID.match(head[0]) else None
    if not head or not MATCH_START.match(head[0]):
        return None
    fields = []
    for part in head[1:]:
        found = TOP_FIELD.match(part)
        if found is None:
            return None
        fields.append((found.group(1), found.group(2)))
    extra = None
    if EXTRA in actions:
        actions, extra = actions.rsplit(EXTRA, 1)
    return FlowLine(ufid, head[0], tuple(fields), actions, extra)


@dataclass(frozen=True)
class Flow:
    dp: str | None
    offloaded: str | None

    @property
    def hardware(self) -> bool:
        return self.offloaded == "yes" and self.dp == "tc"

    @property
    def kind(self) -> str:
        if self.hardware:
            return "offloaded"
        if self.offloaded == "partial":
            return "partial"
        if self.offloaded == "yes":
            return "offloaded-not-tc"
        if self.dp == "tc":
            return "tc-software"
        if self.dp == "ovs":
            return "software"
        return f"dp:{self.dp}" if self.dp else "unknown"


@dataclass
class FlowReport:
    flows: list[Flow] = field(default_factory=list)
    ignored_lines: int = 0
    errors: list[str] = field(default_factory=list)
    """Error lines from OVS programs, or flow lines OVS would not print: the input is not a dump."""

    @property
    def readable(self) -> bool:
        return not self.errors

    @property
    def offloaded(self) -> int:
        return sum(1 for f in self.flows if f.hardware)

    @property
    def verbose(self) -> bool:
        """True when the dump was taken with -m (flows carry a dp: field)."""
        return any(f.dp is not None for f in self.flows)

    def by_datapath(self) -> dict[str, int]:
        return dict(sorted(Counter(f.dp or "unknown" for f in self.flows).items()))

    def by_offload_state(self) -> dict[str, int]:
        return dict(sorted(Counter(f.offloaded or "none" for f in self.flows).items()))

    def proven(self, min_offloaded: int = 1) -> bool:
        return self.readable and self.verbose and self.offloaded >= min_offloaded

    def reason(self, min_offloaded: int = 1) -> str:
        total = len(self.flows)
        if not self.readable:
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            return f"unreadable input, not a flow dump: {self.errors[0]}{more}"
        if total == 0:
            return "no datapath flows in the input: nothing shows offload (is there traffic on VF pods?)"
        if not self.verbose:
            return (f"{total} flows without dp:/offloaded: fields: the dump was taken without -m, "
                    "so it cannot show offload either way; run `ovs-appctl dpctl/dump-flows -m type=offloaded`")
        kinds = Counter(f.kind for f in self.flows if not f.hardware)
        parts = [f"{count} {KINDS.get(kind, kind)}" for kind, count in sorted(kinds.items())]
        verdict = "offload proven" if self.offloaded >= min_offloaded else f"offload not proven (need {min_offloaded})"
        detail = f": {'; '.join(parts)}" if parts else ""
        return f"{verdict}: {self.offloaded} of {total} flows have offloaded:yes and dp:tc{detail}"

    def as_dict(self, min_offloaded: int = 1) -> dict[str, object]:
        return {
            "proven": self.proven(min_offloaded),
            "readable": self.readable,
            "reason": self.reason(min_offloaded),
            "flows": len(self.flows),
            "offloaded": self.offloaded,
            "min_offloaded": min_offloaded,
            "verbose": self.verbose,
            "by_datapath": self.by_datapath(),
            "by_offload_state": self.by_offload_state(),
            "by_kind": dict(sorted(Counter(f.kind for f in self.flows).items())),
            "ignored_lines": self.ignored_lines,
            "errors": self.errors,
        }


def parse_flow(line: str) -> Flow | None:
    """A flow line, or None for anything else. `offloaded:` and `dp:` are
    read from the fields before the actions only: actions can contain any
    text, and a match key such as `dp_hash(...)` is not the datapath."""
    parts = split_flow(line)
    if parts is None:
        return None
    names = [name for name, _ in parts.fields]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UnreadableFlowLine(f"flow line with {' and '.join(n + ':' for n in twice)} more than once: "
                                 f"{line.strip()}")
    fields = dict(parts.fields)
    return Flow(dp=fields.get("dp"), offloaded=fields.get("offloaded"))


def parse_flows(text: str) -> FlowReport:
    report = FlowReport()
    for line in text.splitlines():
        if ERROR_LINE.match(line):
            report.errors.append(line.strip())
            continue
        try:
            flow = parse_flow(line)
        except UnreadableFlowLine as exc:
            report.errors.append(str(exc))
            continue
        if flow is None:
            report.ignored_lines += 1 if line.strip() else 0
        else:
            report.flows.append(flow)
    return report


def check_flows_main(text: str, *, as_json: bool, min_offloaded: int = 1) -> tuple[int, str]:
    """What `nicflow check-flows` prints and exits with: 0 when offload is
    proven, 1 when not (the output says why), 2 when the input is an error
    from OVS rather than a dump."""
    report = parse_flows(text)
    code = 0 if report.proven(min_offloaded) else 1 if report.readable else 2
    if as_json:
        return code, json.dumps(report.as_dict(min_offloaded), indent=2, sort_keys=True) + "\n"
    lines = [report.reason(min_offloaded)]
    if report.flows:
        lines.append("by datapath: " + ", ".join(f"{k}={v}" for k, v in report.by_datapath().items()))
        lines.append("by offload state: " + ", ".join(f"{k}={v}" for k, v in report.by_offload_state().items()))
    if report.ignored_lines:
        lines.append(f"ignored {report.ignored_lines} line(s) that are not flows")
    return code, "\n".join(lines) + "\n"
