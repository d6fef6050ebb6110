"""Definitions: which relations a DDL statement changes, and what it calls while it runs.

Most DDL is walked generically from pglast's node metadata: every relation named anywhere in the
statement counts as DDL on it (a foreign key, INHERITS, LIKE, an index's table), every function
call is resolved and classified (a column default or index expression is evaluated over existing
rows while the statement runs), and nested queries and statements are analyzed as such. Object
lists that name relations as strings (DROP, COMMENT ON, GRANT ... IN SCHEMA) are read by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from policy.analysis.builtins import words
from policy.analysis.functions import SYSTEM_SCHEMAS
from policy.analysis.scope import Columns, DerivedEntry, Level, OpaqueEntry, RelationEntry
from policy.analysis.tree import FIELDS, Node, defelem_text, defelems, list_items, split, strings
from policy.catalog import Relation
from policy.facts import Access, Clause, FunctionClass

if TYPE_CHECKING:
    from policy.analysis.statements import StatementWalker

GENERIC = words(
    """
    AlterCollationStmt AlterDatabaseRefreshCollStmt AlterDatabaseSetStmt AlterDatabaseStmt
    AlterDefaultPrivilegesStmt AlterDomainStmt AlterEnumStmt AlterEventTrigStmt
    AlterExtensionContentsStmt AlterExtensionStmt AlterFdwStmt AlterForeignServerStmt AlterFunctionStmt
    AlterObjectDependsStmt AlterObjectSchemaStmt AlterOpFamilyStmt AlterOperatorStmt AlterOwnerStmt
    AlterPolicyStmt AlterPublicationStmt AlterRoleSetStmt AlterRoleStmt AlterSeqStmt AlterStatsStmt
    AlterSubscriptionStmt AlterTSConfigurationStmt AlterTSDictionaryStmt AlterTableMoveAllStmt
    AlterTableSpaceOptionsStmt AlterTableStmt AlterTypeStmt AlterUserMappingStmt CompositeTypeStmt
    CreateAmStmt CreateCastStmt CreateConversionStmt CreateDomainStmt CreateEnumStmt CreateEventTrigStmt
    CreateExtensionStmt CreateFdwStmt CreateForeignServerStmt CreateForeignTableStmt CreateOpClassStmt
    CreateOpFamilyStmt CreatePLangStmt CreatePolicyStmt CreatePublicationStmt CreateRangeStmt
    CreateRoleStmt CreateSchemaStmt CreateSeqStmt CreateStatsStmt CreateStmt CreateSubscriptionStmt
    CreateTableSpaceStmt CreateTransformStmt CreateUserMappingStmt CreatedbStmt DefineStmt DropOwnedStmt
    DropRoleStmt DropSubscriptionStmt DropTableSpaceStmt DropUserMappingStmt DropdbStmt
    ImportForeignSchemaStmt IndexStmt ReassignOwnedStmt RenameStmt
    """
)
_CREATES = frozenset(n for n in GENERIC if n.startswith("Create")) | {
    "DefineStmt",
    "CompositeTypeStmt",
    "IndexStmt",
}
# Statements that reach another server: the data leaves through it.
_REMOTE = frozenset(
    {
        "CreateSubscriptionStmt",
        "AlterSubscriptionStmt",
        "CreateForeignServerStmt",
        "AlterForeignServerStmt",
        "ImportForeignSchemaStmt",
        "CreateUserMappingStmt",
        "AlterUserMappingStmt",
    }
)
_QUERIES = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_RELATION_OBJECTS = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_FOREIGN_TABLE",
        "OBJECT_SEQUENCE",
        "OBJECT_INDEX",
    }
)
# Objects named (schema., table, name): their table is the relation touched.
_OBJECTS_ON_TABLES = frozenset(
    {"OBJECT_COLUMN", "OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE", "OBJECT_TABCONSTRAINT"}
)
# Roles are the server's identities: creating one that can log in, setting a password, granting a
# membership or handing over everything a role owns gives someone a way in that is not Sekisho's.
# Defaults stored for a role or database (ALTER ROLE/DATABASE ... SET) configure future sessions.
_ADMIN = frozenset(
    {
        "CreateRoleStmt",
        "AlterRoleStmt",
        "DropRoleStmt",
        "ReassignOwnedStmt",
        "DropOwnedStmt",
        "AlterRoleSetStmt",
        "AlterDatabaseSetStmt",
    }
)


# Statements that change what a function, operator, cast or schema name means. Analysis judges
# functions by name (built-ins in pg_catalog are trusted), so after any of these a harmless-looking
# name can run a refused function: ALTER FUNCTION pg_catalog.query_to_xml RENAME TO qx, an aggregate
# whose state function is pg_read_file, an extension's functions moved in by renaming schemas.
_REDEFINES_CODE = frozenset({
    "CreateExtensionStmt", "AlterExtensionStmt", "AlterExtensionContentsStmt", "DefineStmt",
    "CreateCastStmt", "CreateOpClassStmt", "CreateOpFamilyStmt", "AlterOpFamilyStmt",
    "AlterOperatorStmt", "CreateTransformStmt", "CreateConversionStmt", "AlterFunctionStmt",
})  # fmt: skip
_CODE_OBJECTS = frozenset({
    "OBJECT_FUNCTION", "OBJECT_AGGREGATE", "OBJECT_PROCEDURE", "OBJECT_ROUTINE", "OBJECT_OPERATOR",
    "OBJECT_SCHEMA", "OBJECT_EXTENSION", "OBJECT_CAST", "OBJECT_OPCLASS", "OBJECT_OPFAMILY",
    "OBJECT_LANGUAGE", "OBJECT_TRANSFORM", "OBJECT_CONVERSION",
})  # fmt: skip
# Database- and tablespace-level DDL: outside any table the policy names, and able to destroy or
# hide whole databases.
_SERVER_DDL = frozenset({
    "CreatedbStmt", "DropdbStmt", "AlterDatabaseStmt", "AlterDatabaseRefreshCollStmt",
    "CreateTableSpaceStmt", "DropTableSpaceStmt", "AlterTableSpaceOptionsStmt",
})  # fmt: skip


def _redefines_code(kind: str, f: Node) -> bool:
    if kind in _REDEFINES_CODE:
        return True
    object_type = f.get("renameType") if kind == "RenameStmt" else f.get("objectType") or f.get("removeType")
    return kind in ("RenameStmt", "AlterObjectSchemaStmt", "AlterOwnerStmt", "DropStmt") and (
        object_type in _CODE_OBJECTS
    )


def generic(walker: StatementWalker, kind: str, f: Node) -> None:
    facts = walker.facts
    facts.command = "ddl"
    if kind in _CREATES:
        facts.creates_object = True
    if kind in _REMOTE:
        facts.classes.add(FunctionClass.REMOTE)
        facts.note("the statement connects to another server")
    if kind in _ADMIN or (kind == "RenameStmt" and f.get("renameType") == "OBJECT_ROLE"):
        facts.classes.add(FunctionClass.ADMIN)
        facts.note("the statement administers roles or stored server settings")
    if kind in ("RenameStmt", "AlterOwnerStmt"):
        schema = _schema_named(kind, f)
        if schema is not None:
            schema_relations(walker, [schema])
    if _redefines_code(kind, f):
        facts.classes.add(FunctionClass.USER_DEFINED)
        facts.note("the statement changes what a function, operator, cast or schema name means")
    if kind in _SERVER_DDL:
        facts.classes.add(FunctionClass.ADMIN)
        facts.note("the statement creates, changes or drops a database or tablespace")
    if _into_system_schema(kind, f):
        facts.classes.add(FunctionClass.USER_DEFINED)
        facts.note("the statement puts code in a system schema, where its functions would pass for built-ins")
    if kind == "CreatePublicationStmt" and f.get("for_all_tables"):
        all_relations(walker, lambda schema: schema not in SYSTEM_SCHEMAS, Access.DDL)
    own = f.get("relation") if kind.startswith("Create") and kind != "CreatePolicyStmt" else None
    if own is not None:
        walker.created(own)
    saved = walker.quiet
    walker.quiet = True  # names in definitions are the new object's columns and parameters
    try:
        _fields(walker, kind, f, skip="relation" if own is not None else None)
    finally:
        walker.quiet = saved


def _fields(walker: StatementWalker, kind: str, f: Node, skip: str | None = None) -> None:
    for name, struct in FIELDS.get(kind, ()):
        value = f.get(name)
        if not value or name == skip:
            continue
        if struct is not None:
            _visit(walker, struct, value)
        elif isinstance(value, list):
            for item in value:
                if item:
                    _visit(walker, *split(item))
        else:
            _visit(walker, *split(value))


def _visit(walker: StatementWalker, kind: str, f: Node) -> None:
    if kind == "RangeVar":
        walker.relations(f, Access.DDL)
    elif kind == "FuncCall":
        walker.expr({kind: f}, Level(), Clause.OTHER)
    elif kind in _QUERIES:
        walker.query({kind: f}, Level(), None, Clause.OUTPUT)
    elif kind.endswith("Stmt"):
        walker.facts.absorb(walker.nested({kind: f}))
    else:
        if kind == "DefElem":
            _option(walker, f)
        _fields(walker, kind, f)


def _option(walker: StatementWalker, f: Node) -> None:
    """Options that point a foreign table or server at the server's own files and programs."""
    name = str(f.get("defname", "")).lower()
    if name == "program":
        walker.facts.classes.add(FunctionClass.SERVER_PROGRAM)
        walker.facts.note(f"an option runs a server program: {defelem_text(f.get('arg'))}")
    elif name in ("filename", "location"):
        walker.facts.classes.add(FunctionClass.SERVER_FILES)
        walker.facts.note(f"an option names a server file: {defelem_text(f.get('arg'))}")
        walker.session.cacheable = False


def all_relations(walker: StatementWalker, schema_ok: Callable[[str], bool], access: Access) -> None:
    """Every catalog relation in the schemas ``schema_ok`` accepts (GRANT ... ALL TABLES IN SCHEMA)."""
    for (schema, _), rel in sorted(walker.session.catalog.relations.items()):
        if schema_ok(schema):
            walker.record_relation(rel, access)


def _schema_named(kind: str, f: Node) -> str | None:
    """The schema ALTER SCHEMA ... RENAME TO / OWNER TO changes, if that is the statement."""
    if kind == "RenameStmt" and f.get("renameType") == "OBJECT_SCHEMA":
        return str(f.get("subname", ""))
    if kind == "AlterOwnerStmt" and f.get("objectType") == "OBJECT_SCHEMA":
        names = strings(list_items(f.get("object")))
        return names[-1] if names else None
    return None


def _into_system_schema(kind: str, f: Node) -> bool:
    """ALTER ... SET SCHEMA pg_catalog, CREATE EXTENSION ... SCHEMA pg_catalog: until a catalog
    snapshot shows that initdb did not make them, functions in a system schema are taken for
    built-ins, whose bodies are not analyzed (see functions.classes_of)."""
    if kind == "AlterObjectSchemaStmt":
        return f.get("newschema") in SYSTEM_SCHEMAS
    if kind == "CreateExtensionStmt":
        return defelem_text(defelems(f.get("options")).get("schema")) in SYSTEM_SCHEMAS
    return False


def schema_relations(walker: StatementWalker, schemas: list[str]) -> None:
    """Renaming, dropping or handing over a schema changes every relation in it: a protected
    table renamed along with its schema would no longer be the table the policy names."""
    wanted = set(schemas)
    all_relations(walker, lambda schema: schema in wanted, Access.DDL)
    for schema in sorted(wanted):
        walker.facts.note(f'every relation in schema "{schema}" is changed')


def named_relation(walker: StatementWalker, names: list[str], access: Access) -> list[Relation]:
    if not names:
        return []
    schema = names[-2] if len(names) > 1 else None
    return walker.use_relations(schema, names[-1], access)


def drop(walker: StatementWalker, f: Node) -> None:
    walker.facts.command = "ddl"
    remove = f.get("removeType")
    if _redefines_code("DropStmt", f):
        walker.facts.classes.add(FunctionClass.USER_DEFINED)
        walker.facts.note("the statement changes what a function, operator, cast or schema name means")
    if remove == "OBJECT_SCHEMA":
        schema_relations(walker, strings(f.get("objects")))
    for item in f.get("objects", ()):
        if remove in _RELATION_OBJECTS:
            named_relation(walker, strings(list_items(item)), Access.DDL)
        elif remove in _OBJECTS_ON_TABLES:
            named_relation(walker, strings(list_items(item))[:-1], Access.DDL)
    if f.get("behavior") == "DROP_CASCADE":
        walker.facts.note("CASCADE also drops objects that depend on these")


def comment(walker: StatementWalker, f: Node, command: str) -> None:
    """COMMENT ON / SECURITY LABEL ON a relation, a column, or an object of a table."""
    walker.facts.command = command
    objtype = f.get("objtype")
    obj = f.get("object")
    if obj is None:
        return
    if objtype in _RELATION_OBJECTS:
        named_relation(walker, strings(list_items(obj)), Access.DDL)
    elif objtype in _OBJECTS_ON_TABLES:
        named_relation(walker, strings(list_items(obj))[:-1], Access.DDL)


def grant(walker: StatementWalker, f: Node) -> None:
    walker.facts.command = "grant" if f.get("is_grant") else "revoke"
    if f.get("objtype") not in _RELATION_OBJECTS:
        return
    if f.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
        schemas = set(strings(f.get("objects")))
        all_relations(walker, lambda schema: schema in schemas, Access.DDL)
        return
    for item in f.get("objects", ()):
        kind, rv = split(item)
        if kind == "RangeVar":
            walker.relations(rv, Access.DDL)


def rule(walker: StatementWalker, f: Node) -> None:
    facts = walker.facts
    facts.command = "create_rule"
    facts.creates_object = True
    level = new_and_old(walker, f["relation"])
    if f.get("whereClause"):
        walker.expr(f["whereClause"], level, Clause.WHERE)
    for action in f.get("actions", ()):
        kind = split(action)[0]
        if kind in _QUERIES:
            walker.query(action, level, None, Clause.OUTPUT)
        else:
            facts.absorb(walker.nested(action))


def trigger(walker: StatementWalker, f: Node) -> None:
    facts = walker.facts
    facts.command = "create_trigger"
    facts.creates_object = True
    level = new_and_old(walker, f["relation"])
    names = strings(f.get("funcname"))
    walker.call_resolved(walker.session.resolve_function(names[-2] if len(names) > 1 else None, names[-1]), 0)
    if f.get("whenClause"):
        walker.expr(f["whenClause"], level, Clause.WHERE)


def new_and_old(walker: StatementWalker, rv: Node) -> Level:
    """DDL on the rule's or trigger's table, and NEW and OLD as its actions and conditions see them."""
    rels = walker.relations(rv, Access.DDL)
    columns: Columns | None = None
    if rels:
        columns = RelationEntry("", rels, frozenset()).columns()
    level = Level()
    for refname in ("old", "new"):
        level.entries.append(DerivedEntry(refname, columns) if columns is not None else OpaqueEntry(refname))
    return level
