"""The policy loader: YAML to the policy model, and every problem reported with its line and key."""

from __future__ import annotations

import ipaddress
import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

import policy.loader as loader_module
from policy.catalog import TABLE, VIEW, Catalog, Relation
from policy.errors import AnalysisError, PolicyError, PolicyInvalid, Problem
from policy.loader import check_against_catalog, load_policy, load_policy_with_positions
from policy.model import (
    DEFAULT_PII_USE,
    PII_CHANNELS,
    RULE_CLASSES,
    Access,
    Elevation,
    Mask,
    ProtectedTable,
    Role,
    TimeWindow,
    User,
)

ROOT = Path(__file__).resolve().parents[2]

FULL_EXAMPLE = """\
version: 1
protected_tables:
  public.customers:
    max_rows: 1000
    pii:
      name: full
      address: {mask: partial, keep_first: 3}
      phone: phone
      email: email
      card_number: card
  public.orders: {}
roles:
  maintenance:
    restricted: true
    max_rows: 100
    on_row_cap: truncate
    table_max_rows: {public.orders: 500}
    allow: [protected_writes]
    writable: [public.orders]
    clear: [public.customers.email]
    pii_use: {where: equality, join: equality, order_by: refuse, group_by: count}
    from: [127.0.0.1/32, 10.0.0.0/8]
    hours: ["Mon-Fri 07:00-22:00 Asia/Tokyo"]
  compliance_lead: {restricted: true, max_rows: 100}
  break_glass: {restricted: false}
  auditor:
users:
  maint: {roles: [maintenance]}
  lead: {roles: [compliance_lead], from: ["192.0.2.7"]}
  auditor: {roles: [auditor], hours: ["Sat,Sun 10:00-12:00 UTC"]}
default_role: maintenance
elevations:
  bulk_export:
    grants: {allow: [copy_protected], max_rows: 10000}
    max_duration: 2h
    approvers: [compliance_lead]
  emergency:
    grants: {roles: [break_glass]}
    max_duration: 1h30m
    approvers: [compliance_lead, maintenance]
"""

# A valid base that tests change one part of; the line numbers below refer to this text.
BASE = """\
version: 1
protected_tables:
  public.customers:
    pii:
      name: full
      email: email
roles:
  maintenance:
    max_rows: 100
  compliance_lead: {max_rows: 100}
users:
  maint: {roles: [maintenance]}
elevations:
  bulk_export:
    grants: {allow: [copy_protected]}
    approvers: [compliance_lead]
"""


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(PolicyInvalid) as info:
        load_policy(textwrap.dedent(text), "p.yaml")
    return info.value.problems


def only_problem(text: str) -> Problem:
    problems = problems_of(text)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def replaced(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


# --------------------------------------------------------------------------- building the model


def test_the_full_example_builds_the_expected_model() -> None:
    policy = load_policy(FULL_EXAMPLE, "full.yaml")
    customers = ("public", "customers")
    orders = ("public", "orders")
    assert policy.source == "full.yaml"
    assert policy.tables == {
        customers: ProtectedTable(
            relation=customers,
            max_rows=1000,
            pii={
                "name": Mask("full"),
                "address": Mask("partial", keep_first=3),
                "phone": Mask("phone"),
                "email": Mask("email"),
                "card_number": Mask("card"),
            },
        ),
        orders: ProtectedTable(relation=orders, pii={}),
    }
    assert list(policy.tables[customers].pii) == ["name", "address", "phone", "email", "card_number"]
    assert policy.roles["maintenance"] == Role(
        name="maintenance",
        restricted=True,
        allow=frozenset({"protected_writes"}),
        max_rows=100,
        table_max_rows={orders: 500},
        on_row_cap="truncate",
        writable=frozenset({orders}),
        clear=frozenset({("public", "customers", "email")}),
        access=Access(
            networks=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")),
            hours=(TimeWindow(frozenset({1, 2, 3, 4, 5}), time(7), time(22), "Asia/Tokyo"),),
        ),
        pii_use={**DEFAULT_PII_USE, "group_by": "count"},
    )
    assert policy.roles["compliance_lead"] == Role(name="compliance_lead", max_rows=100)
    assert policy.roles["break_glass"] == Role(name="break_glass", restricted=False)
    assert policy.roles["auditor"] == Role(name="auditor")  # an empty entry takes every default
    assert policy.users == {
        "maint": User("maint", ("maintenance",)),
        "lead": User("lead", ("compliance_lead",), Access(networks=(ipaddress.ip_network("192.0.2.7/32"),))),
        "auditor": User(
            "auditor", ("auditor",), Access(hours=(TimeWindow(frozenset({6, 7}), time(10), time(12), "UTC"),))
        ),
    }
    assert policy.default_role == "maintenance"
    assert policy.elevations == {
        "bulk_export": Elevation(
            name="bulk_export",
            grants_allow=frozenset({"copy_protected"}),
            grants_max_rows=10000,
            max_duration=timedelta(hours=2),
            approvers=("compliance_lead",),
        ),
        "emergency": Elevation(
            name="emergency",
            grants_roles=("break_glass",),
            max_duration=timedelta(hours=1, minutes=30),
            approvers=("compliance_lead", "maintenance"),
        ),
    }
    assert [r.name for r in policy.roles_of("nobody-listed")] == ["maintenance"]


def test_the_demo_policy_loads_cleanly_and_implements_the_demo_contract() -> None:
    path = ROOT / "policies" / "demo.yaml"
    policy = load_policy(path.read_text(encoding="utf-8"), str(path))
    customers = policy.tables[("public", "customers")]
    assert set(customers.pii) == {"name", "address", "phone", "email", "card_number"}
    assert {u: policy.users[u].roles for u in policy.users} == {
        "maint": ("maintenance",),
        "lead": ("compliance_lead",),
        "auditor": ("auditor",),
    }
    maintenance = policy.roles["maintenance"]
    assert maintenance.restricted
    assert maintenance.max_rows == 100
    assert maintenance.clear == frozenset()  # masked
    refused = {"copy_protected", "copy_server", "server_files", "large_objects"}
    assert not refused & maintenance.allow
    # Exact lookups of masked PII, nothing that ranks, groups or pattern-matches it.
    assert maintenance.pii_use == {
        "where": "equality", "join": "equality", "group_by": "refuse", "order_by": "refuse",
        "distinct": "refuse", "having": "refuse", "window": "refuse",
    }  # fmt: skip
    assert all(role.restricted and not role.allow for role in policy.roles.values())
    assert policy.default_role is None  # people the policy does not name are refused
    assert {e.approvers for e in policy.elevations.values()} == {("compliance_lead",)}


def test_defaults_and_spellings() -> None:
    policy = load_policy(
        textwrap.dedent(
            """\
            version: 1
            protected_tables:
              Customers:                      # unquoted names fold to lower case, as in SQL
                pii: {Phone: null, '"Given Name"': {mask: partial, keep_last: 2}}
              '"Sales"."Q1"': {}
            roles:
              maintenance: {hours: ["fri-mon 22:00-06:00 Europe/London", "Wednesday 8:00-9:30 UTC"]}
            users:
              "no": {roles: []}               # listed without roles: refused even with a default role
              yes: {roles: [maintenance]}     # names are kept as written, never read as true/false
            default_role: maintenance
            elevations:
              e: {grants: {max_rows: 5}, approvers: [maintenance]}
            """
        ),
        "p.yaml",
    )
    assert set(policy.tables) == {("public", "customers"), ("Sales", "Q1")}
    assert policy.tables[("public", "customers")].pii == {
        "phone": Mask("null"),
        "Given Name": Mask("partial", keep_last=2),
    }
    role = policy.roles["maintenance"]
    assert role.on_row_cap == "truncate"
    assert role.max_rows is None
    assert role.access.hours == (
        TimeWindow(frozenset({5, 6, 7, 1}), time(22), time(6), "Europe/London"),
        TimeWindow(frozenset({3}), time(8), time(9, 30), "UTC"),
    )
    assert set(policy.users) == {"no", "yes"}
    assert policy.roles_of("no") == ()
    assert policy.elevations["e"].max_duration == timedelta(hours=1)


def test_pii_use_defaults_and_the_one_value_form() -> None:
    """A restricted role that does not say gets exact lookups only (fail closed, like a new rule
    class); a mapping overrides the channels it names; one value sets every channel."""
    policy = load_policy(
        textwrap.dedent(
            """\
            version: 1
            roles:
              silent: {}
              some: {pii_use: {order_by: count, where: allow}}
              all_counted: {pii_use: count}
              empty: {pii_use: }
              free: {restricted: false}
            """
        ),
        "p.yaml",
    )
    roles = policy.roles
    assert roles["silent"].pii_use == DEFAULT_PII_USE == roles["empty"].pii_use
    assert DEFAULT_PII_USE == {
        "where": "equality", "join": "equality", "group_by": "refuse", "order_by": "refuse",
        "distinct": "refuse", "having": "refuse", "window": "refuse",
    }  # fmt: skip
    assert roles["some"].pii_use == {**DEFAULT_PII_USE, "order_by": "count", "where": "allow"}
    assert roles["all_counted"].pii_use == dict.fromkeys(PII_CHANNELS, "count")


# --------------------------------------------------------------------------- the exception tree


def test_exception_tree_and_message_format() -> None:
    assert issubclass(PolicyInvalid, PolicyError)
    assert issubclass(AnalysisError, PolicyError)
    assert {PolicyError.code, PolicyInvalid.code, AnalysisError.code} == {
        "policy_error",
        "policy_invalid",
        "analysis_error",
    }
    error = PolicyInvalid([Problem("a.yaml", 3, "roles.x", "bad"), Problem("a.yaml", None, "", "worse")])
    assert str(error) == "a.yaml:3: roles.x: bad\na.yaml: worse"


# --------------------------------------------------------------------------- each rejection: line and key

REJECTIONS = [
    pytest.param(
        replaced("    max_rows: 100\n  compliance", "    max_rows: 100\n    colour: blue\n  compliance"),
        10, "roles.maintenance.colour", "unknown key (allowed: restricted, max_rows,", id="unknown-key",
    ),
    pytest.param(
        replaced("version: 1\n", "version: 1\nprotected_table: {}\n"),
        2, "protected_table", "did you mean protected_tables?", id="unknown-top-key-suggests",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "max_rows: lots\n  compliance"),
        9, "roles.maintenance.max_rows", "expected a whole number, found the text 'lots'", id="type-int",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "max_rows: 1.5\n  compliance"),
        9, "roles.maintenance.max_rows", "expected a whole number, found the number 1.5", id="type-float",
    ),
    pytest.param(
        replaced("  maintenance:\n    max_rows: 100", "  maintenance:\n    restricted: maybe"),
        9, "roles.maintenance.restricted", "expected true or false, found the text 'maybe'", id="type-bool",
    ),
    pytest.param(
        replaced("maint: {roles: [maintenance]}", "maint: {roles: maintenance}"),
        12, "users.maint.roles", "expected a list of role names such as [a, b], found the text 'maintenance'",
        id="type-list",
    ),
    pytest.param(
        replaced("users:\n  maint: {roles: [maintenance]}", "users: [maint]"),
        11, "users", "expected a mapping (indented key: value lines), found a list", id="type-mapping",
    ),
    pytest.param(
        replaced("maint: {roles: [maintenance]}", "maint: {}"),
        12, "users.maint.roles", "required: the roles of this person", id="required",
    ),
    pytest.param(
        replaced("maint: {roles: [maintenance]}", "maint: {roles: [maintenence]}"),
        12, "users.maint.roles[0]",
        "role 'maintenence' is not defined under roles; did you mean maintenance?",
        id="undefined-role-user",
    ),
    pytest.param(
        replaced("elevations:", "default_role: janitor\nelevations:"),
        13, "default_role", "role 'janitor' is not defined under roles", id="undefined-default-role",
    ),
    pytest.param(
        replaced("grants: {allow: [copy_protected]}", "grants: {roles: [dba]}"),
        15, "elevations.bulk_export.grants.roles[0]", "role 'dba' is not defined under roles",
        id="undefined-role-elevation",
    ),
    pytest.param(
        replaced("approvers: [compliance_lead]", "approvers: [compliance]"),
        16, "elevations.bulk_export.approvers[0]", "role 'compliance' is not defined under roles",
        id="undefined-approver",
    ),
    pytest.param(
        replaced("approvers: [compliance_lead]", "approvers: []"),
        16, "elevations.bulk_export.approvers", "list at least one role", id="no-approvers",
    ),
    pytest.param(
        replaced("grants: {allow: [copy_protected]}", "grants: {allow: [copy_everything]}"),
        15, "elevations.bulk_export.grants.allow[0]",
        "unknown rule class 'copy_everything' (allowed: " + ", ".join(RULE_CLASSES) + ")",
        id="rule-class-elevation",
    ),
    pytest.param(
        replaced("    max_rows: 100\n  compliance", "    allow: [copy_protectd]\n  compliance"),
        9, "roles.maintenance.allow[0]", "unknown rule class 'copy_protectd'", id="rule-class-role",
    ),
    pytest.param(
        replaced("name: full", "name: blur"),
        5, "protected_tables.public.customers.pii.name",
        "unknown mask kind 'blur' (allowed: full, partial, email, phone, card, token, null)", id="mask-kind",
    ),
    pytest.param(
        replaced("name: full", "name: {mask: ful}"),
        5, "protected_tables.public.customers.pii.name.mask", "did you mean full?", id="mask-kind-mapping",
    ),
    pytest.param(
        replaced("name: full", "name: {mask: partial, keep_last: 0}"),
        5, "protected_tables.public.customers.pii.name.keep_last", "must be at least 1, found 0",
        id="keep-last",
    ),
    pytest.param(
        replaced("name: full", "name: {mask: full, keep_first: 2}"),
        5, "protected_tables.public.customers.pii.name.keep_first", "applies only to mask: partial",
        id="keep-without-partial",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "max_rows: 0\n  compliance"),
        9, "roles.maintenance.max_rows", "must be at least 1, found 0", id="max-rows-zero",
    ),
    pytest.param(
        replaced("  public.customers:\n", "  public.customers:\n    max_rows: -5\n"),
        4, "protected_tables.public.customers.max_rows", "must be at least 1, found -5", id="table-max-rows",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "table_max_rows: {public.orders: 0}\n  compliance"),
        9, "roles.maintenance.table_max_rows.public.orders", "must be at least 1", id="table-max-rows-role",
    ),
    pytest.param(
        replaced("grants: {allow: [copy_protected]}", "grants: {max_rows: 0}"),
        15, "elevations.bulk_export.grants.max_rows", "must be at least 1", id="grant-max-rows",
    ),
    pytest.param(
        replaced("    approvers:", "    max_duration: 0m\n    approvers:"),
        16, "elevations.bulk_export.max_duration", "must be longer than zero", id="duration-zero",
    ),
    pytest.param(
        replaced("    approvers:", "    max_duration: 31d\n    approvers:"),
        16, "elevations.bulk_export.max_duration", "31d is longer than the 30-day limit", id="duration-long",
    ),
    pytest.param(
        replaced("    approvers:", "    max_duration: 7200\n    approvers:"),
        16, "elevations.bulk_export.max_duration",
        "expected a duration such as 30m, 2h or 1d12h, found the number 7200", id="duration-number",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "from: [10.0.0.0/33]\n  compliance"),
        9, "roles.maintenance.from[0]", "'10.0.0.0/33' is not an IP address or CIDR range", id="cidr",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "from: [10.1.2.3/8]\n  compliance"),
        9, "roles.maintenance.from[0]", "did you mean 10.0.0.0/8?", id="cidr-host-bits",
    ),
    pytest.param(
        replaced("maint: {roles: [maintenance]}", "maint: {roles: [maintenance], from: []}"),
        12, "users.maint.from", "an empty list would allow any address", id="cidr-empty",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", 'hours: ["Mon-Fri 08:00-20:00 Asia/Tokio"]\n  compliance'),
        9, "roles.maintenance.hours[0]", "unknown time zone 'Asia/Tokio'", id="window-zone",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", 'hours: ["Mon-Fri 08:00-20:00"]\n  compliance'),
        9, "roles.maintenance.hours[0]", "expected days, hours and a time zone such as", id="window-no-zone",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", 'hours: ["Mon-Fry 08:00-20:00 UTC"]\n  compliance'),
        9, "roles.maintenance.hours[0]", "'Mon-Fry' is not a day or a range of days", id="window-day",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", 'hours: ["Mon 08:00-24:30 UTC"]\n  compliance'),
        9, "roles.maintenance.hours[0]", "24:30 is not a time of day", id="window-time",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", 'hours: ["Mon 08:00-08:00 UTC"]\n  compliance'),
        9, "roles.maintenance.hours[0]", "starts and ends at the same time", id="window-empty",
    ),
    pytest.param(
        replaced("  public.customers:\n", "  db.public.customers:\n"),
        3, "protected_tables.db.public.customers",
        "expected a table name as schema.table (or just table, meaning public.table), "
        "found 'db.public.customers'",
        id="table-name",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "writable: [public.customers-old]\n  compliance"),
        9, "roles.maintenance.writable[0]", "expected a table name as schema.table", id="table-name-list",
    ),
    pytest.param(
        replaced(
            "    max_rows: 100\n  compliance",
            "    allow: [protected_writes]\n    writable: [public.orders]\n  compliance",
        ),
        10, "roles.maintenance.writable[0]", "public.orders is not a protected table",
        id="writable-unprotected",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "writable: [customers]\n  compliance"),
        9, "roles.maintenance.writable", "has no effect unless allow includes protected_writes",
        id="writable-without-allow",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "clear: [public.customers.phone]\n  compliance"),
        9, "roles.maintenance.clear[0]",
        "phone is not a PII column of public.customers (its PII columns: email, name)",
        id="clear-not-pii",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "clear: [orders.note]\n  compliance"),
        9, "roles.maintenance.clear[0]", "public.orders is not a protected table", id="clear-unprotected",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: {where: equality, sort: refuse}\n  compliance"),
        9, "roles.maintenance.pii_use.sort",
        "unknown channel 'sort' (allowed: " + ", ".join(PII_CHANNELS) + ")", id="pii-use-channel",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: {order_by: refus}\n  compliance"),
        9, "roles.maintenance.pii_use.order_by",
        "unknown value 'refus' (allowed: allow, count, equality, refuse); did you mean refuse?",
        id="pii-use-value",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: {group_by: equality}\n  compliance"),
        9, "roles.maintenance.pii_use.group_by", "equality applies to where and join only, not to group_by",
        id="pii-use-equality-channel",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: equality\n  compliance"),
        9, "roles.maintenance.pii_use", "equality applies to where and join only, not for every channel",
        id="pii-use-equality-everywhere",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: [where]\n  compliance"),
        9, "roles.maintenance.pii_use", "expected a mapping of channels such as {where: equality",
        id="pii-use-list",
    ),
    pytest.param(
        replaced("max_rows: 100\n  compliance", "pii_use: {where: 1}\n  compliance"),
        9, "roles.maintenance.pii_use.where", "unknown value '1'", id="pii-use-number",
    ),
    pytest.param(
        replaced("  compliance_lead: {max_rows: 100}\n",
                 "  compliance_lead: {restricted: false, pii_use: {order_by: refuse}}\n"),
        10, "roles.compliance_lead.pii_use", "has no effect on an unrestricted role",
        id="pii-use-unrestricted",
    ),
    pytest.param(
        replaced("version: 1", "version: 2"),
        1, "version", "this Sekisho reads version 1, found 2", id="version",
    ),
    pytest.param(
        replaced("version: 1\n", ""),
        1, "version", "required: write version: 1 at the top", id="version-missing",
    ),
    pytest.param(
        replaced("      email: email\n", "      email: email\n      email: full\n"),
        7, "protected_tables.public.customers.pii.email",
        "duplicate key (also at line 6); YAML would silently keep only the last one", id="duplicate-column",
    ),
    pytest.param(
        replaced("users:\n", "users:\n  maint: {roles: [compliance_lead]}\n"),
        13, "users.maint", "duplicate key (also at line 12)", id="duplicate-user",
    ),
    pytest.param(
        replaced("  compliance_lead: {max_rows: 100}\n", "  compliance_lead: {max_rows: 100, max_rows: 5}\n"),
        10, "roles.compliance_lead.max_rows", "duplicate key (also at line 10)", id="duplicate-inline",
    ),
    pytest.param(
        replaced("roles:\n", "  customers: {}\nroles:\n"),
        7, "protected_tables.customers", "public.customers is already listed at line 3",
        id="duplicate-table-after-folding",
    ),
    pytest.param(
        replaced("name: full", "name: full\n  ]"), 6, "", "not valid YAML", id="yaml-syntax",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "key", "message"), REJECTIONS)
def test_each_rejection_names_line_and_key(text: str, line: int, key: str, message: str) -> None:
    problem = only_problem(text)
    assert (problem.source, problem.line, problem.key) == ("p.yaml", line, key), problem
    assert message in problem.message, problem
    if key:
        assert str(problem).startswith(f"p.yaml:{line}: {key}: "), problem


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
        version: 1
        protected_tables:
          public.customers:
            pii: {name: blur, phone: phone, phone: email}
        roles:
          maintenance:
            max_rows: 0
            on_row_cap: explode
            allow: [everything]
            clear: [public.customers.address]
        users:
          maint: {roles: [maintenence]}
        default_role: nobody
        elevations:
          export: {grants: {}, max_duration: 90d, approvers: [compliance_lead]}
        """
    problems = problems_of(text)
    assert [(p.line, p.key) for p in problems] == [
        (4, "protected_tables.public.customers.pii.name"),
        (4, "protected_tables.public.customers.pii.phone"),
        (7, "roles.maintenance.max_rows"),
        (8, "roles.maintenance.on_row_cap"),
        (9, "roles.maintenance.allow[0]"),
        (10, "roles.maintenance.clear[0]"),
        (12, "users.maint.roles[0]"),
        (13, "default_role"),
        (15, "elevations.export.grants"),
        (15, "elevations.export.max_duration"),
        (15, "elevations.export.approvers[0]"),
    ]
    message = str(PolicyInvalid(problems))
    assert message.count("\n") == len(problems) - 1
    assert (
        "p.yaml:8: roles.maintenance.on_row_cap: unknown value 'explode' (allowed: truncate, error)"
        in message
    )


def test_references_are_checked_whatever_order_the_sections_come_in() -> None:
    text = """\
        version: 1
        elevations:
          export: {grants: {roles: [dba]}, approvers: [lead]}
        users:
          maint: {roles: [maintenance]}
        roles:
          maintenance: {}
          lead: {}
          dba: {restricted: false}
        """
    policy = load_policy(textwrap.dedent(text), "p.yaml")
    assert policy.elevations["export"].grants_roles == ("dba",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the policy is empty"),
        ("# only a comment\n", "the policy is empty"),
        ("- version: 1\n", "expected a policy (a mapping with version, roles, ...), found a list"),
        (
            "version: 1\nroles: {a: {}}\n---\nversion: 1\n",
            "not valid YAML: expected a single document in the stream; but found another document",
        ),
        ("version: 1\nroles: {a: {}}\n\x07\n", "not valid YAML"),
    ],
)
def test_documents_that_are_not_policies(text: str, message: str) -> None:
    problem = problems_of(text)[0]
    assert message in problem.message


def test_roles_section_is_required() -> None:
    problem = only_problem("version: 1\n")
    assert (problem.line, problem.key, problem.message) == (1, "roles", "required: define at least one role")


def test_yaml_tags_and_non_text_keys_are_refused() -> None:
    problems = problems_of(
        """\
        version: 1
        roles:
          maintenance: {}
          [a, b]: {}
        users:
          maint: {roles: [!!python/name:os.system maintenance]}
        """
    )
    assert [(p.line, p.key) for p in problems] == [(4, "roles"), (6, "users.maint.roles[0]")]
    assert "expected a name as the key, found a list" in problems[0].message
    assert "YAML tags are not used here" in problems[1].message


# --------------------------------------------------------------------------- against a catalog


def _catalog() -> Catalog:
    return Catalog.of(
        [
            Relation(
                "public", "customers", TABLE, ("id", "name", "address", "phone", "email", "card_number")
            ),
            Relation("public", "orders", TABLE, ("id", "customer_id", "amount")),
            Relation("public", "customer_names", VIEW, ("name",), frozenset({("public", "customers")})),
        ]
    )


def test_catalog_check_passes_for_the_demo_policy() -> None:
    path = ROOT / "policies" / "demo.yaml"
    policy, positions = load_policy_with_positions(path.read_text(encoding="utf-8"), "demo.yaml")
    assert check_against_catalog(policy, _catalog(), positions) == []


def test_catalog_check_names_the_line_of_each_missing_table_and_column() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        protected_tables:
          public.customers:
            pii:
              name: full
              phon: phone
          public.clients:
            pii: {name: full}
          billing.invoices: {}
          customer_names: {pii: {name: full}}
        roles:
          maintenance:
            allow: [protected_writes]
            writable: [public.customers]
            table_max_rows: {public.order: 10, public.orders: 5}
        """
    )
    policy, positions = load_policy_with_positions(text, "p.yaml")
    problems = check_against_catalog(policy, _catalog(), positions)
    assert [str(p) for p in problems] == [
        'p.yaml:6: protected_tables.public.customers.pii.phon: column "phon" does not exist in '
        'public.customers; did you mean "phone"?',
        "p.yaml:7: protected_tables.public.clients: table public.clients does not exist in the database",
        "p.yaml:9: protected_tables.billing.invoices: table billing.invoices does not exist in the database "
        "(there is no schema billing)",
        "p.yaml:15: roles.maintenance.table_max_rows.public.order: table public.order does not exist in the "
        "database; did you mean public.orders?",
    ]
    # Without positions the problems still name the key, only not the line.
    bare = check_against_catalog(policy, _catalog())
    assert (bare[0].line, bare[0].key) == (None, "protected_tables.public.customers.pii.phon")


def test_catalog_check_of_writable_tables_and_sequences() -> None:
    text = textwrap.dedent(
        """\
        version: 1
        protected_tables:
          public.ledger: {}
          public.ids: {}
        roles:
          maintenance: {allow: [protected_writes], writable: [public.ledger]}
        """
    )
    policy, positions = load_policy_with_positions(text, "p.yaml")
    catalog = Catalog.of([Relation("public", "ids", "S", ("last_value", "log_cnt", "is_called"))])
    assert [(p.line, p.key, p.message) for p in check_against_catalog(policy, catalog, positions)] == [
        (3, "protected_tables.public.ledger", "table public.ledger does not exist in the database"),
        (
            4,
            "protected_tables.public.ids",
            "public.ids is a sequence, not a table, so it has no rows to protect",
        ),
        (6, "roles.maintenance.writable[0]", "table public.ledger does not exist in the database"),
    ]


def test_loader_does_no_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader takes text; a file name is only a label in messages."""
    monkeypatch.chdir(tmp_path)
    policy = load_policy(BASE, "does/not/exist.yaml")
    assert policy.source == "does/not/exist.yaml"


def test_the_documented_example_is_a_valid_policy() -> None:
    assert loader_module.__doc__ is not None
    example = loader_module.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    loaded = load_policy(textwrap.dedent(example), "loader docstring")
    assert set(loaded.roles) == {"maintenance", "compliance_lead", "break_glass"}
