"""Where and when a person may connect: per user and per role; every listed restriction must hold.

There is no exemption by network location: an address restriction narrows who may connect, it never
loosens what a connected person may do (the NTT West insider worked from inside).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from zoneinfo import ZoneInfo

from policy.model import Access, Policy


def connection_refusal(policy: Policy, user: str, address: str, now: datetime) -> str | None:
    """Why this person may not connect from ``address`` at ``now`` (aware), or None if they may."""
    entry = policy.users.get(user)
    scopes: list[tuple[str, Access]] = []
    if entry is not None:
        scopes.append((f'user "{user}"', entry.access))
    scopes += [(f'role "{role.name}"', role.access) for role in policy.roles_of(user)]
    for scope, access in scopes:
        if access.networks and not _address_in(address, access):
            return f'Sekisho policy does not allow user "{user}" to connect from {address} ({scope})'
        if access.hours and not within_hours(now, access):
            return f'Sekisho policy does not allow user "{user}" to connect at this time ({scope})'
    return None


def _address_in(address: str, access: Access) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # not an IP address (a Unix socket): fails a network restriction, closed
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in access.networks)


def within_hours(now: datetime, access: Access) -> bool:
    """Whether ``now`` (aware) falls in one of ``access``'s time windows (detection reads it too)."""
    for window in access.hours:
        local = now.astimezone(ZoneInfo(window.timezone))
        if local.isoweekday() not in window.days:
            continue
        moment = local.time().replace(tzinfo=None)
        if window.start <= window.end:
            if window.start <= moment < window.end:
                return True
        elif moment >= window.start or moment < window.end:  # a window across midnight
            return True
    return False
