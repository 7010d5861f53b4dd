"""The offload verdict from `ovs-appctl dpctl/dump-flows -m` output.

An offloaded flow carries both `offloaded:yes` and `dp:tc` (the Kube-OVN
page's test). Everything else is reported, never counted as success:
- no `dp:` field on any flow: the dump was taken without `-m`, which prints
  neither field, so nothing can be said either way;
- `dp:ovs`: a kernel datapath (software) flow;
- `dp:tc` without `offloaded:yes`: a TC flow the NIC did not take (in
  software TC);
- `offloaded:partial`: DPDK partial offload, not hardware offload.
Lines that are not flows (headers, warnings, blank) are counted and ignored.
Used by verify-offload and by `nicflow check-flows`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

ACTIONS = re.compile(r"(?:^|[ ,])actions:")
FIELD = re.compile(r"(?:^|, )(offloaded|dp):([A-Za-z0-9_-]+)(?=,|$)")
FLOW_START = re.compile(r"^(ufid:[0-9a-f-]+, )?[a-z_]+\(")
KINDS = {
    "software": "dp:ovs (software datapath)",
    "tc-software": "dp:tc without offloaded:yes (TC flows the NIC did not take)",
    "partial": "offloaded:partial (DPDK partial offload, not hardware offload)",
    "unknown": "without a dp: field",
}


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
        if self.dp == "tc":
            return "tc-software"
        if self.dp == "ovs":
            return "software"
        return f"dp:{self.dp}" if self.dp else "unknown"


@dataclass
class FlowReport:
    flows: list[Flow] = field(default_factory=list)
    ignored_lines: int = 0

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
        return self.verbose and self.offloaded >= min_offloaded

    def reason(self, min_offloaded: int = 1) -> str:
        total = len(self.flows)
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
            "reason": self.reason(min_offloaded),
            "flows": len(self.flows),
            "offloaded": self.offloaded,
            "min_offloaded": min_offloaded,
            "verbose": self.verbose,
            "by_datapath": self.by_datapath(),
            "by_offload_state": self.by_offload_state(),
            "by_kind": dict(sorted(Counter(f.kind for f in self.flows).items())),
            "ignored_lines": self.ignored_lines,
        }


def parse_flow(line: str) -> Flow | None:
    """A flow line, or None for anything else. Fields are read from the part
    before `actions:` only: actions can contain any text."""
    line = line.strip()
    match = ACTIONS.search(line)
    if not line or match is None or not FLOW_START.match(line):
        return None
    fields = dict(FIELD.findall(line[:match.start()]))
    return Flow(dp=fields.get("dp"), offloaded=fields.get("offloaded"))


def parse_flows(text: str) -> FlowReport:
    report = FlowReport()
    for line in text.splitlines():
        flow = parse_flow(line)
        if flow is None:
            report.ignored_lines += 1 if line.strip() else 0
        else:
            report.flows.append(flow)
    return report


def check_flows_main(text: str, *, as_json: bool, min_offloaded: int = 1) -> tuple[int, str]:
    """What `nicflow check-flows` prints and exits with: 0 when offload is
    proven, 1 when not (the output says why). Unreadable input (exit 2) is the
    caller's to report, before this is called."""
    report = parse_flows(text)
    code = 0 if report.proven(min_offloaded) else 1
    if as_json:
        return code, json.dumps(report.as_dict(min_offloaded), indent=2, sort_keys=True) + "\n"
    lines = [report.reason(min_offloaded)]
    if report.flows:
        lines.append("by datapath: " + ", ".join(f"{k}={v}" for k, v in report.by_datapath().items()))
        lines.append("by offload state: " + ", ".join(f"{k}={v}" for k, v in report.by_offload_state().items()))
    if report.ignored_lines:
        lines.append(f"ignored {report.ignored_lines} line(s) that are not flows")
    return code, "\n".join(lines) + "\n"
