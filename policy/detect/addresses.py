"""new_address: a person working from a network they have not used before.

Addresses are grouped by network (a /24 for IPv4 and a /64 for IPv6 by default), so that an office's
DHCP does not raise alarms. Every network a person uses is remembered (the most recent 64); an alarm
needs the person's habits to be learned first, since at the start every network is new.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Self

from policy.detect.alarm import Finding, Plain
from policy.detect.base import Context, PersonRule, touch
from policy.events import ConnectionEvent, StatementEvent
from policy.model import AlarmSettings

_MAX_NETWORKS = 64


class NewAddress(PersonRule):
    name = "new_address"

    def __init__(self, networks: OrderedDict[str, float] | None = None, days: int = 0) -> None:
        self._networks: OrderedDict[str, float] = networks if networks is not None else OrderedDict()
        self._days = days

    @staticmethod
    def enabled(settings: AlarmSettings) -> bool:
        return settings.new_address.enabled

    def statement(self, ev: StatementEvent, ctx: Context) -> list[Finding]:
        return self._seen(ev.user, ev.address, ev.application_name, ctx)

    def connection(self, ev: ConnectionEvent, ctx: Context) -> list[Finding]:
        return self._seen(ev.user, ev.address, ev.application_name, ctx) if ev.accepted else []

    def _seen(self, user: str, address: str, application: str, ctx: Context) -> list[Finding]:
        rule = ctx.settings.new_address
        network = network_of(address, rule.prefix_v4, rule.prefix_v6)
        if network in self._networks:
            touch(self._networks, network, ctx.at, _MAX_NETWORKS)
            return []
        before: list[Plain] = list(self._networks)
        touch(self._networks, network, ctx.at, _MAX_NETWORKS)
        if not before or self._days < ctx.settings.learning_days:
            return []
        return [
            Finding(
                rule=self.name,
                severity=rule.severity,
                key=network,
                summary=f"{user} is working from {address}, a network they have not used before ({network})",
                action="Confirm with the person that this is them (a new office, VPN or machine); if not, "
                "lock the account and rotate its password.",
                evidence={
                    "address": address,
                    "network": network,
                    "application_name": application,
                    "known_networks": before[-10:],
                },
            )
        ]

    def close_day(self, active: bool, ctx: Context) -> None:
        if active:
            self._days += 1

    def to_dict(self) -> dict[str, Plain]:
        return {"networks": [[k, v] for k, v in self._networks.items()], "days": self._days}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        networks = OrderedDict((str(k), float(v)) for k, v in data.get("networks", []))
        return cls(networks, int(data.get("days", 0)))


@functools.lru_cache(maxsize=4096)  # every statement asks; parsing an address costs more than the rest
def network_of(address: str, prefix_v4: int, prefix_v6: int) -> str:
    """The network an address belongs to, as text; anything that is not an IP address (a Unix
    socket path) stands for itself."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
