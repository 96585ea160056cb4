"""salt-virt domain library: the logic behind the ``virt`` Salt module, runner, states and pillar.

Everything here is plain Python, importable and testable without a running Salt master or minion.
The Salt entry points under ``_modules``, ``_runners``, ``_states``, ``_pillar`` and ``_output`` are
thin glue over these modules.
"""

__version__ = "0.1.0"
