"""Preloaded by the forkserver of sweep workers (:func:`sweep_exec.worker_context`), once per process.

Importing this module imports what trials need and primes the first model save (see
:func:`warmup.warm_up`), so every worker forked from that server starts ready. The side effect is
the point; nothing but the forkserver imports it.
"""

from __future__ import annotations

from mlops_local.ml.warmup import warm_up

warm_up(prime_models=True)
