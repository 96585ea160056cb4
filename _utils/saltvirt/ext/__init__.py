"""Salt loader entry point of the pip-installed bundle.

Salt's loader looks for ``modules``, ``runners``, ``states``, ``pillar``, ``output``, ``grains`` and ``engines``
sub-directories of this package (``setup.cfg`` maps the repository's ``_modules``, ``_runners``...
onto them). In a file_roots install the same directories are synced by ``saltutil.sync_all``.
"""
