"""Alarms as values: what a detection rule found, about whom, with what evidence and advice."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from policy.model import SEVERITIES

# Evidence holds only what JSON can carry, so that alarms go to logs, webhooks and the feed as they are.
Plain: TypeAlias = str | int | float | bool | list["Plain"] | dict[str, "Plain"] | None


def severity_rank(severity: str) -> int:
    """The position of ``severity`` in ``SEVERITIES`` (low is 0); unknown severities rank highest,
    so that a typo never makes an alarm look harmless."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule reports; the detector adds the person and time, and drops repeats (``key``)."""

    rule: str  # a key of policy.model.ALARM_RULES
    severity: str
    key: str  # what makes two findings of one rule and person the same alarm (a table, a day, ...)
    summary: str
    action: str  # the suggested next step, for the person reading the alarm
    evidence: dict[str, Plain] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str  # derived from rule, person, key and time: a replay gives the same ids
    at: datetime  # the time of the event that raised it (UTC)
    severity: str  # one of SEVERITIES
    rule: str
    user: str
    summary: str
    evidence: dict[str, Plain]
    action: str
    key: str  # the deduplication key within rule and person

    @classmethod
    def of(cls, finding: Finding, user: str, at: datetime) -> Alarm:
        digest = hashlib.blake2b(
            "\0".join((finding.rule, user, finding.key, at.isoformat())).encode("utf-8", "surrogatepass"),
            digest_size=8,
        ).hexdigest()
        return cls(
            id=digest,
            at=at,
            severity=finding.severity,
            rule=finding.rule,
            user=user,
            summary=finding.summary,
            evidence=finding.evidence,
            action=finding.action,
            key=finding.key,
        )

    def at_least(self, severity: str) -> bool:
        return severity_rank(self.severity) >= severity_rank(severity)

    def to_dict(self) -> dict[str, Plain]:
        """The alarm as JSON-ready data (``at`` in ISO 8601): the webhook payload and feed item."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "severity": self.severity,
            "rule": self.rule,
            "user": self.user,
            "summary": self.summary,
            "evidence": self.evidence,
            "action": self.action,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alarm:
        return cls(
            id=str(data["id"]),
            at=datetime.fromisoformat(str(data["at"])),
            severity=str(data["severity"]),
            rule=str(data["rule"]),
            user=str(data["user"]),
            summary=str(data["summary"]),
            evidence=dict(data["evidence"]),
            action=str(data["action"]),
            key=str(data["key"]),
        )
