"""Preloaded by the forkserver of sweep workers (:func:`executor.worker_context`), once per process.

Importing this module readies the forkserver, and so every worker forked from it:

- Workers run trial code only, never the parent's ``__main__``. multiprocessing has each new child
  re-run the main script the parent names when it starts it (as ``__mp_main__``). Under Streamlit
  that is the UI's app script: Streamlit installs every script run as ``__main__``, from any
  session's thread at any moment, so no swap in the parent can be relied on; a worker re-running it
  bound the UI's metrics port (PortInUse), died, and broke the pool. Trials need only functions of
  importable modules (they pickle by module name), so children of this server skip that step.
- What trials need is imported and the first model save primed (see :func:`warmup.warm_up`).

The side effects are the point; nothing but the forkserver imports it.
"""

from __future__ import annotations

import multiprocessing.spawn

from mlops_local.ml.warmup import warm_up


def _keep_own_main(main: str) -> None:
    """A worker keeps this server's ``__main__`` (the forkserver's, which runs nothing)."""


multiprocessing.spawn._fixup_main_from_path = _keep_own_main  # this process (the forkserver) only
multiprocessing.spawn._fixup_main_from_name = _keep_own_main
warm_up(prime_models=True)
