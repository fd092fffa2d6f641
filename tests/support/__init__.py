"""Helpers shared by the tests, imported as ``support.<module>``.

Naming, so that a reader can tell what a name is from its shape:

- modules are named by what they hold: ``cloud`` (the reference Cloud and an
  enrolled hub), ``daemon`` (``hublink run`` as a subprocess), ``cli`` (the one
  way to run the command line), ``tunnel`` (frps/frpc), ``network`` (ports,
  listeners, a relay), ``terminal`` (a pseudo-terminal), ``processes``,
  ``outbox``, ``backup``, ``smallfs`` (a small tmpfs), ``page``,
  ``scripted_cloud``, ``nspawn_box``, ``polling`` (the one ``wait_until``),
  ``timing`` (``HUBLINK_TEST_TIME_FACTOR``);
- fixtures are nouns, what the test receives: ``devcloud``, ``hub``,
  ``daemons``, ``box``, ``frp_cloud``, ``hub_app``, ``tunnel_hub``,
  ``scripted_cloud``, ``listeners``; they are registered in ``conftest.py``
  (``pytest_plugins``), so tests use them without importing them;
- functions are verbs: ``make_*`` builds, ``find_*`` looks up, ``read_*`` /
  ``write_*`` touch files, ``run_*`` runs a command, ``fetch*`` asks over HTTP,
  ``wait_until`` polls; predicates read ``is_*``; context managers are named for
  what holds while they are open (``running``, ``writer_process``);
- classes and constants are nouns (``HublinkProcess``, ``FAST_WEBSOCKET``).
"""
