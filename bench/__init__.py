"""Sekisho's benchmark harness (`make bench`, i.e. `python -m bench`).

pgbench runs against PostgreSQL directly, through PgBouncer and through Sekisho, alternating
target by target within each round on the same machine in the same run, so that a noisy shared host
moves every target's figures together and the ratios stay meaningful even when absolute TPS does not.
Workloads (``--workloads``): ``select``, pgbench -S (the default); ``masking``, 100-row results with
and without masked columns (bench/masking.py). ``python -m bench.micro`` times masking per cell
and per row in-process (bench/micro.py). ``python -m bench.insider`` simulates a month of
maintenance work with one person draining customers, against the policy side alone (bench/insider.py).
"""
