"""Statement analysis: what a client string reads, writes, calls and returns, as ``policy.facts``.

Theory of operation
-------------------
PostgreSQL's own grammar (pglast, libpg_query) parses the string; its JSON parse tree is walked,
never regenerated, so the facts describe exactly what the server will run.

* ``statements`` dispatches on each top-level statement's node and builds one ``Facts`` collector;
  statements nested in another (EXPLAIN, PREPARE, DECLARE, COPY, CREATE ... AS, rule actions,
  code block bodies) get their own collector that is then folded into the parent's.
* ``queries`` walks SELECT and the data-modifying statements: scopes (``scope``) of FROM entries,
  CTEs and window definitions; ``expressions`` walks every expression and returns its lineage
  (``lineage.Lin``: the base columns a value derives from, whether it is a plain reference, whether
  it carries a whole row). Lineage flows through subqueries, CTEs, set operations and joins.
* ``functions`` resolves and classifies function calls; ``settings`` renders SET values the way
  the server stores them; ``ddl`` and ``bodies`` cover definitions and procedural code.

Anything the walker does not model raises ``Unanalyzable``; the caller turns it into a statement
marked unanalyzable (fail closed) instead of guessing. Nothing here does I/O.
"""
