"""The audit trail: every connection attempt, statement, policy change, restriction and alarm, as
hash-chained records written ahead to a local spool and delivered in order to a PostgreSQL audit
database (see ``gateway.audit.trail`` for the guarantees, ``verify`` and ``search`` for reading it)."""
