"""What a scenario measured: figures, each beside a baseline measured in the same run and the issue's target."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """The issue's target for a figure: `at_least` (higher is better) or at most (lower is better)."""

    value: float
    at_least: bool

    def met_by(self, value: float) -> bool:
        return value >= self.value if self.at_least else value <= self.value

    def text(self, unit: str) -> str:
        return f"{'≥' if self.at_least else '≤'} {number(self.value)} {unit}".strip()


@dataclass
class Figure:
    label: str
    value: float | None  # None: not measured (see `note`)
    unit: str
    baseline: float | None = None  # measured in the same run, same unit
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.target.met_by(self.value)

    def value_text(self) -> str:
        return "not measured" if self.value is None else f"{number(self.value)} {self.unit}".strip()

    def baseline_text(self) -> str:
        if self.baseline is None:
            return ""
        return f"{number(self.baseline)} {self.unit} ({self.baseline_label})".strip()

    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.3g}×"

    def target_text(self) -> str:
        if self.target is None:
            return ""
        verdict = {True: "met", False: "NOT met", None: ""}[self.met]
        return f"{self.target.text(self.unit)} {verdict}".strip()


@dataclass
class Scenario:
    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how it was measured, caveats, details (markdown)
    table: list[str] = field(default_factory=list)  # markdown lines after the notes: figures by point, if any
    seconds: float = 0.0  # how long the scenario took to run
    load_after: float = 0.0  # the 1-minute load average when it ended: the machine is shared

    def console(self) -> str:
        lines = [f"{self.number}. {self.title}  ({self.seconds:.0f} s, load average {self.load_after:.1f} after)"]
        for f in self.figures:
            parts = [f"   {f.label:<44} {f.value_text():>18}"]
            if f.baseline is not None:
                parts.append(f"  baseline {f.baseline_text()}  ratio {f.ratio_text()}")
            if f.target is not None:
                parts.append(f"  target {f.target_text()}")
            if f.note:
                parts.append(f"  [{f.note}]")
            lines.append("".join(parts))
        return "\n".join(lines)


def number(value: float) -> str:
    """1234.5 -> "1,234"; 12.34 -> "12.3"; 0.01234 -> "0.0123": enough digits to read, no more."""
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
