"""Sekisho's benchmark harness (`make bench`, i.e. `python -m bench`).

pgbench -S runs against PostgreSQL directly, through PgBouncer and through Sekisho, alternating
target by target within each round on the same machine in the same run, so that a noisy shared host
moves every target's figures together and the ratios stay meaningful even when absolute TPS does not.
"""
