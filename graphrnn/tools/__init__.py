"""The command line and the main job: the part of graphrnn that names frontends and backends.

``cli`` (the ``graphrnn`` command's table of subcommands), ``cli_tools`` (viz, compile, bench and
``resolve_cell``, which reads equations files and nngraph cells) and ``train_charlm`` (the main
job) sit on top of the compiler: they import the core, ``frontends`` and (by name) ``codegen``;
the core never imports them.
"""
