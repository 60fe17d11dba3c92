"""The ``face4d`` sub-commands, one module per command group, each with ``add_parser(commands)``
(its options, and ``run`` as the parser's default) and ``run(args)``: ``dataset``, ``generate``,
``fill``, ``render``, ``edit``, ``retarget``, ``demo`` and ``train``. ``face4d.cli`` puts them together."""
from face4d.commands import dataset, demo, edit, fill, generate, render, retarget, train

COMMANDS = (dataset, generate, render, edit, demo, fill, train, retarget)
"""In the order of ``face4d --help``."""
